/* The HTTP/1.1 client: a connection pool per host:port, one request at a
 * time on each connection (no pipelining: a server that closes a
 * connection after the first response would lose the others, and RFC 9112
 * section 9.3.2 makes retrying them the client's problem).
 *
 * Ownership, in one place:
 *   - A connection (hc_conn) is freed only in its connection_lost, so that
 *     its memory outlives every transport callback; aborting one only asks
 *     the transport to end it.
 *   - A call (braid_http_call) belongs to the client until it finishes: it
 *     is freed right after its deferred errbacks, after a buffered
 *     response's deferred fired, or after a streamed body's body_end. A
 *     cancelled deferred frees it in the canceller.
 *   - The client is freed once it was destroyed (by the user or by reactor
 *     teardown) and its last connection is gone: connection attempts still
 *     waiting for the thread-pool resolver cannot be stopped, only waited
 *     for.
 * Every user callback (deferred firing, body_data) may abort the call or
 * destroy the client, so the code re-checks conn->call after each one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "braid/alloc.h"
#include "braid/endpoint.h"
#include "braid/error.h"
#include "braid/http_client.h"
#include "braid/braid.h"
#include "braid/version.h"

#define HC_SEC UINT64_C(1000000000)

/* The most interim (1xx) responses a call accepts before its final one.
 * RFC 9110 section 15.2 sets no number, but real servers send one or two
 * (100 Continue, 102 Processing, 103 Early Hints), and each is parsed and
 * dropped: a server that sent them without end kept a call busy, and its
 * response timeout from firing, for as long as it went on. */
#define HC_MAX_INTERIM 16

typedef struct hc_pool hc_pool;
typedef struct hc_conn hc_conn;

typedef enum { HC_HEAD = 0, HC_BODY } hc_read_state;

struct braid_http_call {
  braid_http_client_t *c;
  hc_pool *pool;
  hc_conn *conn;
  braid_deferred_t d; /* none once fired */
  braid_http_call_t *qnext;
  char *head; /* the serialized request head */
  size_t head_len;
  char *body; /* whole body, or streamed bytes (framed) not yet sent */
  size_t body_len, body_cap;
  int64_t body_length;   /* streamed: announced length, -1 chunked */
  uint64_t body_written; /* streamed: payload bytes written so far */
  braid_http_body_handlers h;
  braid_http_client_response_t *resp;
  braid_timer_t cont_timer;
  bool stream_body, body_finished, chunked, idempotent, is_head;
  bool expect_continue, waiting_continue, body_sent_any, retried;
  bool streaming;   /* response body to handlers */
  bool fired;       /* the deferred succeeded (streaming) */
  unsigned interim; /* interim responses seen (HC_MAX_INTERIM) */
  bool *alive;      /* cleared when freed (see braid_http_request_ex) */
};

struct hc_conn {
  braid_protocol_t proto;
  braid_http_client_t *c;
  hc_pool *pool;
  hc_conn *next, *prev; /* pool's list */
  braid_transport_t *t;
  braid_http_call_t *call;
  braid_timer_t timer; /* response-head timeout, or idle timeout */
  size_t served;       /* responses completed */
  char *buf;
  size_t len, cap;
  braid_http_response_t parse;
  braid_http_header_t *hdrs;
  hc_read_state rstate;
  braid_http_body_kind_t kind;
  uint64_t remaining;
  braid_http_chunked_decoder_t dec;
  bool keep_alive, idle, connected, doomed, aborting, got_bytes;
  bool paused; /* the caller paused a streamed body */
};

struct hc_pool {
  hc_pool *next;
  char host[256];
  uint16_t port;
  bool https; /* connections run TLS (never shared with plain http) */
  hc_conn *conns;
  size_t nconns, nidle;
  braid_http_call_t *qhead, *qtail;
};

struct braid_http_client {
  braid_reactor_t *r;
  braid_http_client_options o;
  char ua[64];
  braid_teardown_t h;
  bool have_handle;
  hc_pool *pools;
  size_t nconns;
  bool closing; /* destroyed: no new connections, no retries */
};

static void hc_conn_send(hc_conn *k);
static void hc_conn_release(hc_conn *k);
static void hc_pool_kick(hc_pool *p);

/* ------------------------------------------------------------------------
 * URL
 * ------------------------------------------------------------------------ */

int braid_http_url_parse(braid_http_url_t *u, const char *url) {
  if (u == NULL || url == NULL)
    return BRAID_EINVAL;
  memset(u, 0, sizeof *u);
  const char *s = url;
  if (strncasecmp(s, "http://", 7) == 0) {
    s += 7;
    u->port = 80;
  } else if (strncasecmp(s, "https://", 8) == 0) {
    s += 8;
    u->https = true;
    u->port = 443;
  } else {
    return BRAID_EINVAL;
  }
  size_t alen = strcspn(s, "/?#");
  const char *hs = s, *he;
  const char *end = s + alen;
  if (memchr(s, '@', alen) != NULL)
    return BRAID_EINVAL; /* userinfo is deprecated (RFC 9110 4.2.4) */
  const char *portp = NULL;
  if (alen > 0 && *s == '[') {
    const char *rb = memchr(s, ']', alen);
    if (rb == NULL)
      return BRAID_EINVAL;
    hs = s + 1;
    he = rb;
    u->ipv6 = true;
    if (rb + 1 < end) {
      if (rb[1] != ':')
        return BRAID_EINVAL;
      portp = rb + 2;
    }
    for (const char *q = hs; q < he; q++)
      if (!(strchr("0123456789abcdefABCDEF:.", *q) != NULL))
        return BRAID_EINVAL;
  } else {
    const char *colon = memchr(s, ':', alen);
    he = colon != NULL ? colon : end;
    if (colon != NULL)
      portp = colon + 1;
    for (const char *q = hs; q < he; q++) {
      unsigned char ch = (unsigned char)*q;
      if (ch <= ' ' || ch >= 0x7f || strchr("<>\"{}|\\^`[]%", ch) != NULL)
        return BRAID_EINVAL;
    }
  }
  if (he == hs)
    return BRAID_EINVAL;
  if ((size_t)(he - hs) >= sizeof u->host)
    return BRAID_ENAMETOOLONG;
  if (portp != NULL && portp < end) {
    unsigned long v = 0;
    for (const char *q = portp; q < end; q++) {
      if (*q < '0' || *q > '9' || v > 65535)
        return BRAID_EINVAL;
      v = v * 10 + (unsigned long)(*q - '0');
    }
    if (v == 0 || v > 65535)
      return BRAID_EINVAL;
    u->port = (uint16_t)v;
  }
  for (size_t i = 0; hs + i < he; i++) {
    char ch = hs[i];
    u->host[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
  }
  u->path = end;
  u->path_len = strcspn(end, "#");
  for (size_t i = 0; i < u->path_len; i++) {
    unsigned char ch = (unsigned char)end[i];
    if (ch <= ' ' || ch >= 0x7f)
      return BRAID_EINVAL; /* must be percent-encoded already */
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

static int hc_buf_append(char **buf, size_t *len, size_t *cap, const void *d,
                         size_t n) {
  if (n == 0)
    return 0;
  if (*len + n > *cap) {
    size_t nc = *cap ? *cap : 256;
    while (nc < *len + n)
      nc *= 2;
    char *nb = braid_realloc(*buf, nc + 1);
    if (nb == NULL)
      return BRAID_ENOMEM;
    *buf = nb;
    *cap = nc;
  }
  memcpy(*buf + *len, d, n);
  *len += n;
  return 0;
}

/* (Re)start a timer whether or not it is pending. */
static void hc_timer_arm(braid_reactor_t *r, braid_timer_t *t, uint64_t delay,
                         braid_timer_cb cb, void *arg) {
  if (braid_timer_active(t))
    braid_timer_cancel(t);
  braid_timer_start(r, t, delay, cb, arg);
}

static bool hc_is_token(const char *s, size_t n) {
  if (n == 0)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch <= ' ' || ch >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", ch) != NULL)
      return false;
  }
  return true;
}

static bool hc_eq(braid_http_view_t v, const char *s) {
  size_t n = strlen(s);
  return v.len == n && strncasecmp(v.ptr, s, n) == 0;
}

void braid_http_client_response_free(void *p) {
  braid_http_client_response_t *resp = p;
  if (resp == NULL)
    return;
  braid_free(resp->head_);
  braid_free(resp->body);
  braid_free(resp);
}

const braid_http_view_t *
braid_http_client_response_header(const braid_http_client_response_t *resp,
                                  const char *name) {
  if (resp == NULL || name == NULL)
    return NULL;
  for (size_t i = 0; i < resp->num_headers; i++)
    if (hc_eq(resp->headers[i].name, name))
      return &resp->headers[i].value;
  return NULL;
}

/* ------------------------------------------------------------------------
 * Calls: finishing them
 * ------------------------------------------------------------------------ */

static void hc_call_free(braid_http_call_t *call) {
  if (call->alive != NULL)
    *call->alive = false;
  if (braid_timer_active(&call->cont_timer))
    braid_timer_cancel(&call->cont_timer);
  braid_http_client_response_free(call->resp);
  braid_free(call->head);
  braid_free(call->body);
  braid_free(call);
}

/* The call ends with an error: errback its deferred, or, once a streamed
 * response's deferred has fired, tell body_end. Frees the call. */
static void hc_call_fail(braid_http_call_t *call, int code, const char *msg) {
  braid_reactor_t *r = call->c->r;
  if (!braid_deferred_is_none(call->d)) {
    braid_deferred_t d = call->d;
    call->d = braid_deferred_none();
    braid_failure_t *f = msg != NULL
                             ? braid_failure_new(r, NULL, code, NULL, "%s", msg)
                             : braid_failure_from_code(r, code);
    /* Free before firing: the errback may destroy the client. */
    hc_call_free(call);
    braid_deferred_errback(d, f);
    return;
  }
  if (call->fired && call->h.body_end != NULL)
    call->h.body_end(call, code, call->h.user);
  hc_call_free(call);
}

/* The response is complete. */
static void hc_call_succeed(braid_http_call_t *call) {
  if (call->streaming) {
    if (call->h.body_end != NULL)
      call->h.body_end(call, 0, call->h.user);
    hc_call_free(call);
    return;
  }
  braid_deferred_t d = call->d;
  braid_http_client_response_t *resp = call->resp;
  call->d = braid_deferred_none();
  call->resp = NULL;
  hc_call_free(call);
  braid_deferred_callback(d, resp, braid_http_client_response_free);
}

static void hc_queue_remove(hc_pool *p, braid_http_call_t *call) {
  braid_http_call_t **pp = &p->qhead, *prev = NULL;
  while (*pp != NULL && *pp != call) {
    prev = *pp;
    pp = &(*pp)->qnext;
  }
  if (*pp == NULL)
    return;
  *pp = call->qnext;
  if (p->qtail == call)
    p->qtail = prev;
  call->qnext = NULL;
}

/* ------------------------------------------------------------------------
 * Connections
 * ------------------------------------------------------------------------ */

static void hc_client_maybe_free(braid_http_client_t *c) {
  if (!c->closing || c->nconns > 0)
    return;
  while (c->pools != NULL) {
    hc_pool *p = c->pools;
    c->pools = p->next;
    braid_free(p);
  }
  braid_free(c);
}

static void hc_conn_abort(hc_conn *k) {
  k->aborting = true;
  k->doomed = true;
  if (braid_timer_active(&k->timer))
    braid_timer_cancel(&k->timer);
  if (k->t != NULL)
    braid_transport_abort(k->t);
}

/* Detach the call from its connection, abort the connection, fail the
 * call. */
static void hc_conn_fail(hc_conn *k, int code, const char *msg) {
  braid_http_call_t *call = k->call;
  k->call = NULL;
  hc_conn_abort(k);
  if (call != NULL) {
    call->conn = NULL;
    hc_call_fail(call, code, msg);
  }
}

static void hc_timer_cb(braid_timer_t *t, void *arg) {
  (void)t;
  hc_conn *k = arg;
  if (k->call != NULL)
    hc_conn_fail(k, BRAID_ETIMEDOUT,
                 k->rstate == HC_BODY ? "the response body stalled"
                                      : "timed out waiting for the response");
  else if (k->t != NULL)
    braid_transport_close(k->t); /* idle too long */
}

/* While a body arrives, the connection's timer measures silence. */
static void hc_body_timer(hc_conn *k) {
  uint64_t to = k->c->o.body_timeout;
  if (to != UINT64_MAX && !k->paused)
    hc_timer_arm(k->c->r, &k->timer, to, hc_timer_cb, k);
}

static void hc_call_write_body_now(braid_http_call_t *call) {
  hc_conn *k = call->conn;
  call->waiting_continue = false;
  if (braid_timer_active(&call->cont_timer))
    braid_timer_cancel(&call->cont_timer);
  if (call->body_len > 0) {
    braid_transport_write(k->t, call->body, call->body_len);
    call->body_sent_any = true;
    if (call->stream_body)
      call->body_len = 0; /* sent: the buffer only holds pending bytes */
  }
  if (!call->stream_body || call->body_finished) {
    /* The whole request is out: the server's turn. */
    uint64_t to = call->c->o.response_timeout;
    if (to != UINT64_MAX && k->rstate == HC_HEAD)
      hc_timer_arm(call->c->r, &k->timer, to, hc_timer_cb, k);
  }
}

static void hc_cont_timer_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid_http_call_t *call = arg;
  if (call->conn != NULL && call->waiting_continue)
    hc_call_write_body_now(call);
}

/* Start the call on a connected, free connection. */
static void hc_conn_send(hc_conn *k) {
  braid_http_call_t *call = k->call;
  braid_http_response_reset(&k->parse);
  k->parse.headers = k->hdrs;
  k->parse.headers_cap = call->c->o.limits.max_headers;
  k->parse.request_was_head = call->is_head;
  k->rstate = HC_HEAD;
  k->len = 0;
  k->got_bytes = false;
  k->keep_alive = false;
  k->paused = false;
  memset(&k->dec, 0, sizeof k->dec);
  braid_transport_resume_reading(k->t);
  braid_transport_write(k->t, call->head, call->head_len);
  bool has_body = call->stream_body || call->body_len > 0;
  if (has_body && call->expect_continue) {
    call->waiting_continue = true;
    hc_timer_arm(call->c->r, &call->cont_timer, call->c->o.continue_timeout,
                 hc_cont_timer_cb, call);
    uint64_t to = call->c->o.response_timeout;
    if (to != UINT64_MAX)
      hc_timer_arm(call->c->r, &k->timer, to, hc_timer_cb, k);
  } else {
    hc_call_write_body_now(call);
  }
}

/* Hand the call to a fresh connection. */
static int hc_conn_open(hc_pool *p, braid_http_call_t *call);

static void hc_call_start(braid_http_call_t *call, bool front) {
  hc_pool *p = call->pool;
  braid_http_client_t *c = call->c;
  /* The most recently used idle connection is the least likely to have
   * been closed by the server's idle timer. */
  for (hc_conn *k = p->conns; k != NULL; k = k->next) {
    if (k->idle && !k->aborting && !braid_transport_closing(k->t)) {
      k->idle = false;
      p->nidle--;
      braid_timer_cancel(&k->timer);
      k->call = call;
      call->conn = k;
      hc_conn_send(k);
      return;
    }
  }
  if (p->nconns < c->o.max_per_host) {
    int rc = hc_conn_open(p, call);
    if (rc < 0)
      hc_call_fail(call, rc, NULL);
    return;
  }
  if (front) {
    call->qnext = p->qhead;
    p->qhead = call;
    if (p->qtail == NULL)
      p->qtail = call;
  } else {
    call->qnext = NULL;
    if (p->qtail != NULL)
      p->qtail->qnext = call;
    else
      p->qhead = call;
    p->qtail = call;
  }
}

/* Give waiting calls a slot freed by a lost connection. */
static void hc_pool_kick(hc_pool *p) {
  while (p->qhead != NULL && p->nconns < p->qhead->c->o.max_per_host) {
    braid_http_call_t *call = p->qhead;
    if (call->c->closing)
      return;
    hc_queue_remove(p, call);
    hc_call_start(call, true);
  }
}

/* The connection finished a response and may carry another. */
static void hc_conn_release(hc_conn *k) {
  hc_pool *p = k->pool;
  braid_http_client_t *c = k->c;
  k->call = NULL;
  if (c->closing) {
    hc_conn_abort(k);
    return;
  }
  /* A streaming caller may have paused it; an idle connection must read
   * to notice the server closing it. */
  braid_transport_resume_reading(k->t);
  if (p->qhead != NULL) {
    braid_http_call_t *call = p->qhead;
    hc_queue_remove(p, call);
    k->call = call;
    call->conn = k;
    hc_conn_send(k);
    return;
  }
  if (p->nidle >= c->o.max_idle_per_host) {
    braid_transport_close(k->t);
    return;
  }
  k->idle = true;
  p->nidle++;
  /* Move to the front: hc_call_start takes the first idle one. */
  if (p->conns != k) {
    k->prev->next = k->next;
    if (k->next != NULL)
      k->next->prev = k->prev;
    k->prev = NULL;
    k->next = p->conns;
    p->conns->prev = k;
    p->conns = k;
  }
  hc_timer_arm(c->r, &k->timer, c->o.idle_timeout, hc_timer_cb, k);
}

/* The response is complete; `extra` bytes followed it, which a server may
 * not send unasked. */
static void hc_conn_complete(hc_conn *k, size_t extra) {
  braid_http_call_t *call = k->call;
  if (braid_timer_active(&k->timer))
    braid_timer_cancel(&k->timer);
  bool reuse = k->keep_alive && extra == 0 && !call->waiting_continue &&
               (!call->stream_body || call->body_finished);
  k->served++;
  k->call = NULL;
  call->conn = NULL;
  k->len = 0;
  if (call->resp != NULL)
    call->resp->reused_connection = k->served > 1;
  if (reuse)
    hc_conn_release(k);
  else if (!k->aborting)
    braid_transport_close(k->t);
  hc_call_succeed(call);
}

/* Pass body bytes on. Returns false if the call went away (aborted by a
 * callback, or failed on a limit). */
static bool hc_deliver(hc_conn *k, const char *data, size_t n) {
  braid_http_call_t *call = k->call;
  if (n == 0)
    return true;
  if (call->streaming) {
    if (call->h.body_data != NULL)
      call->h.body_data(call, data, n, call->h.user);
    return k->call == call && !k->aborting;
  }
  braid_http_client_response_t *resp = call->resp;
  if (resp->body_len + n > call->c->o.max_body_size) {
    hc_conn_fail(k, BRAID_ELIMIT, "response body larger than max_body_size");
    return false;
  }
  if (hc_buf_append(&resp->body, &resp->body_len, &resp->body_cap_, data, n) <
      0) {
    hc_conn_fail(k, BRAID_ENOMEM, NULL);
    return false;
  }
  resp->body[resp->body_len] = '\0';
  return true;
}

/* A final response head is in k->buf[0..n). */
static bool hc_got_head(hc_conn *k, size_t n) {
  braid_http_call_t *call = k->call;
  braid_http_response_t *ps = &k->parse;
  size_t nh = ps->num_headers;
  braid_http_client_response_t *resp = braid_calloc(1, sizeof *resp);
  char *blk = braid_malloc(nh * sizeof(braid_http_header_t) + n + 1);
  /* A buffered body is never NULL, even when empty. */
  char *body = call->streaming ? NULL : braid_calloc(1, 1);
  if (resp == NULL || blk == NULL || (!call->streaming && body == NULL)) {
    braid_free(resp);
    braid_free(blk);
    braid_free(body);
    hc_conn_fail(k, BRAID_ENOMEM, NULL);
    return false;
  }
  /* One block: the header array, then a copy of the head's bytes. */
  braid_http_header_t *hs = (braid_http_header_t *)(void *)blk;
  char *copy = blk + nh * sizeof(braid_http_header_t);
  memcpy(copy, k->buf, n);
  copy[n] = '\0';
#define HC_REBASE(v)                                                           \
  ((braid_http_view_t){(v).ptr != NULL ? copy + ((v).ptr - k->buf) : NULL,     \
                       (v).len})
  for (size_t i = 0; i < nh; i++) {
    hs[i].name = HC_REBASE(ps->headers[i].name);
    hs[i].value = HC_REBASE(ps->headers[i].value);
  }
  resp->reason = HC_REBASE(ps->reason);
#undef HC_REBASE
  resp->head_ = blk;
  resp->body = body;
  resp->headers = hs;
  resp->num_headers = nh;
  resp->status = ps->status;
  resp->minor_version = ps->minor_version;
  resp->reused_connection = k->served > 0;
  call->resp = resp;
  k->kind = ps->body_kind;
  k->remaining = ps->content_length;
  k->keep_alive = ps->keep_alive;
  k->rstate = HC_BODY;
  hc_body_timer(k);
  if (call->waiting_continue) {
    /* A final answer instead of 100: the body is not sent (RFC 9110
     * section 10.1.1), and the server may still be waiting for it, so
     * the connection is not reused. */
    call->waiting_continue = false;
    braid_timer_cancel(&call->cont_timer);
    k->keep_alive = false;
  }
  if (call->streaming) {
    braid_deferred_t d = call->d;
    call->d = braid_deferred_none();
    call->fired = true;
    call->resp = NULL; /* the deferred owns it now */
    braid_deferred_callback(d, resp, braid_http_client_response_free);
    if (k->call != call || k->aborting)
      return false;
  }
  return true;
}

/* Feed bytes of the response body; returns false when the connection has
 * nothing more to do with these bytes. */
static void hc_body(hc_conn *k, const char *data, size_t n) {
  switch (k->kind) {
  case BRAID_HTTP_BODY_NONE:
    hc_conn_complete(k, n);
    return;
  case BRAID_HTTP_BODY_LENGTH: {
    size_t take = n < k->remaining ? n : (size_t)k->remaining;
    if (!hc_deliver(k, data, take))
      return;
    k->remaining -= take;
    if (k->remaining == 0)
      hc_conn_complete(k, n - take);
    return;
  }
  case BRAID_HTTP_BODY_UNTIL_CLOSE:
    hc_deliver(k, data, n);
    return;
  case BRAID_HTTP_BODY_CHUNKED: {
    /* The decoder works in place: copy into our buffer (it is empty
     * between calls, since every call consumes all its input). */
    if (data != k->buf) {
      k->len = 0;
      if (hc_buf_append(&k->buf, &k->len, &k->cap, data, n) < 0) {
        hc_conn_fail(k, BRAID_ENOMEM, NULL);
        return;
      }
    }
    size_t dl = k->len;
    ptrdiff_t rc = braid_http_decode_chunked(&k->dec, k->buf, &dl);
    k->len = 0;
    if (rc == BRAID_HTTP_ERROR) {
      hc_conn_fail(k, BRAID_EPROTO, "bad chunked framing in the response");
      return;
    }
    if (!hc_deliver(k, k->buf, dl))
      return;
    if (rc >= 0)
      hc_conn_complete(k, (size_t)rc);
    return;
  }
  }
}

static void hc_data(braid_protocol_t *pr, const void *data, size_t n) {
  hc_conn *k = BRAID_CONTAINER_OF(pr, hc_conn, proto);
  if (k->aborting)
    return;
  if (k->call == NULL) {
    /* Nothing was asked: a server may not speak first (RFC 9112 section
     * 9.3), so this connection cannot be trusted with a request. */
    hc_conn_abort(k);
    return;
  }
  k->got_bytes = true;
  if (k->rstate == HC_BODY) {
    hc_body_timer(k);
    hc_body(k, data, n);
    return;
  }
  braid_http_call_t *call = k->call;
  if (hc_buf_append(&k->buf, &k->len, &k->cap, data, n) < 0) {
    hc_conn_fail(k, BRAID_ENOMEM, NULL);
    return;
  }
  for (;;) {
    int rc = braid_http_parse_response(k->buf, k->len, &k->parse,
                                       &call->c->o.limits);
    if (rc == BRAID_HTTP_INCOMPLETE)
      return;
    if (rc == BRAID_HTTP_ERROR) {
      if (k->parse.error_status == 431)
        hc_conn_fail(k, BRAID_ELIMIT, "response head over the limits");
      else
        hc_conn_fail(k, BRAID_EPROTO, "malformed response head");
      return;
    }
    size_t hn = (size_t)rc;
    int st = k->parse.status;
    if (st >= 100 && st < 200) {
      if (st == 101) {
        /* The connection would now speak another protocol; nothing here
         * asked for that. */
        hc_conn_fail(k, BRAID_EPROTO, "unexpected 101 Switching Protocols");
        return;
      }
      if (++call->interim > HC_MAX_INTERIM) {
        hc_conn_fail(k, BRAID_EPROTO,
                     "too many interim (1xx) responses before the final one");
        return;
      }
      if (st == 100 && call->waiting_continue)
        hc_call_write_body_now(call);
      /* Interim responses (100, 102, 103) are skipped. */
      memmove(k->buf, k->buf + hn, k->len - hn);
      k->len -= hn;
      braid_http_response_reset(&k->parse);
      continue;
    }
    if (!hc_got_head(k, hn))
      return;
    size_t rest = k->len - hn;
    if (k->kind == BRAID_HTTP_BODY_CHUNKED) {
      memmove(k->buf, k->buf + hn, rest);
      k->len = rest;
      hc_body(k, k->buf, rest);
    } else {
      /* hc_body may reuse k->buf for the next request only after
       * completing, and complete only looks at the count. */
      k->len = 0;
      hc_body(k, k->buf + hn, rest);
    }
    return;
  }
}

static void hc_made(braid_protocol_t *pr, braid_transport_t *t) {
  hc_conn *k = BRAID_CONTAINER_OF(pr, hc_conn, proto);
  k->t = t;
  k->connected = true;
  if (k->doomed || k->call == NULL || k->c->closing) {
    hc_conn_abort(k);
    return;
  }
  braid_transport_set_nodelay(t, true);
  hc_conn_send(k);
}

static void hc_lost(braid_protocol_t *pr, int reason) {
  hc_conn *k = BRAID_CONTAINER_OF(pr, hc_conn, proto);
  braid_http_client_t *c = k->c;
  hc_pool *p = k->pool;
  if (braid_timer_active(&k->timer))
    braid_timer_cancel(&k->timer);
  /* Unlink first, so callbacks below see an accurate pool. */
  if (k->prev != NULL)
    k->prev->next = k->next;
  else
    p->conns = k->next;
  if (k->next != NULL)
    k->next->prev = k->prev;
  p->nconns--;
  if (k->idle)
    p->nidle--;
  k->t = NULL;
  braid_http_call_t *call = k->call;
  k->call = NULL;
  if (call != NULL) {
    call->conn = NULL;
    if (!k->connected) {
      hc_call_fail(call, reason < 0 ? reason : BRAID_ECONNREFUSED, NULL);
    } else if (k->rstate == HC_BODY && k->kind == BRAID_HTTP_BODY_UNTIL_CLOSE &&
               reason == 0) {
      k->served++;
      hc_call_succeed(call);
    } else if (k->served > 0 && !k->got_bytes && call->idempotent &&
               !call->stream_body && !call->retried && !c->closing) {
      /* The server closed a pooled connection while our request was on
       * the way (RFC 9110 section 9.2.2 allows one more try). */
      call->retried = true;
      hc_call_start(call, true);
    } else {
      hc_call_fail(call, reason < 0 ? reason : BRAID_EPROTO,
                   reason < 0 ? NULL
                              : "connection closed before the response was "
                                "complete");
    }
  }
  braid_free(k->buf);
  braid_free(k->hdrs);
  braid_free(k);
  /* The pool's count already dropped, so a waiting call can have the
   * slot; the client's count drops last, so that a callback run by the
   * kick (a connect error) that destroys the client cannot free it under
   * us. */
  if (!c->closing)
    hc_pool_kick(p);
  c->nconns--;
  hc_client_maybe_free(c);
}

/* The transport's write queue crossed a mark: tell a caller streaming a
 * request body (Twisted's IPushProducer, the caller as producer). */
static void hc_flow(hc_conn *k, bool paused) {
  braid_http_call_t *call = k->call;
  if (call != NULL && call->stream_body && !call->body_finished &&
      call->h.body_writable != NULL)
    call->h.body_writable(call, paused, call->h.user);
}

static void hc_pause_writing(braid_protocol_t *pr) {
  hc_flow(BRAID_CONTAINER_OF(pr, hc_conn, proto), true);
}

static void hc_resume_writing(braid_protocol_t *pr) {
  hc_flow(BRAID_CONTAINER_OF(pr, hc_conn, proto), false);
}

static const braid_protocol_ops hc_conn_ops = {
    .connection_made = hc_made,
    .data_received = hc_data,
    .connection_lost = hc_lost,
    .pause_writing = hc_pause_writing,
    .resume_writing = hc_resume_writing,
};

static int hc_default_connect(braid_reactor_t *r, const char *host,
                              uint16_t port, uint64_t timeout,
                              braid_protocol_t *p, void *arg) {
  (void)arg;
  braid_addr_t a;
  braid_connect_options o = {0};
  o.timeout = timeout;
  if (braid_addr_ip(&a, host, port) == 0)
    return braid_connect(r, &a, &o, p);
  /* A name: the endpoint layer resolves it on the thread pool and tries
   * each address. Names cannot contain ':' (IPv6 literals took the branch
   * above), so no escaping is needed. */
  char desc[BRAID_ENDPOINT_HOST_MAX + 64];
  snprintf(desc, sizeof desc, "tcp:host=%s:port=%u:timeout=%.3f", host,
           (unsigned)port, (double)timeout / 1e9);
  return braid_endpoint_connect(r, desc, p, NULL, 0);
}

/* Append `v` to an endpoint description, escaping ':' and '\\'. */
static void hc_ep_escape(char *out, size_t size, size_t *len, const char *v) {
  for (; *v != '\0' && *len + 3 < size; v++) {
    if (*v == ':' || *v == '\\')
      out[(*len)++] = '\\';
    out[(*len)++] = *v;
  }
  out[*len] = '\0';
}

/* https: a TLS client endpoint (braid/tls.h) verifies the server's
 * certificate against the system's CAs (or opts.tls_ca_file) and its name
 * against the URL's host, and offers ALPN "http/1.1". Without TLS in this
 * build the endpoint layer answers BRAID_ENOTSUP. */
static int hc_tls_connect(braid_http_client_t *c, hc_pool *p,
                          braid_protocol_t *proto) {
  char desc[BRAID_ENDPOINT_HOST_MAX * 3 + 128];
  size_t len = 0;
  desc[0] = '\0';
  hc_ep_escape(desc, sizeof desc, &len, "tls");
  len += (size_t)snprintf(desc + len, sizeof desc - len, ":host=");
  hc_ep_escape(desc, sizeof desc, &len, p->host);
  len += (size_t)snprintf(desc + len, sizeof desc - len,
                          ":port=%u:alpn=http/1.1:timeout=%.3f",
                          (unsigned)p->port,
                          (double)c->o.connect_timeout / 1e9);
  if (c->o.tls_ca_file != NULL && len + 8 < sizeof desc) {
    len += (size_t)snprintf(desc + len, sizeof desc - len, ":caFile=");
    hc_ep_escape(desc, sizeof desc, &len, c->o.tls_ca_file);
  }
  return braid_endpoint_connect(c->r, desc, proto, NULL, 0);
}

static int hc_conn_open(hc_pool *p, braid_http_call_t *call) {
  braid_http_client_t *c = call->c;
  hc_conn *k = braid_calloc(1, sizeof *k);
  braid_http_header_t *hdrs =
      braid_calloc(c->o.limits.max_headers, sizeof *hdrs);
  if (k == NULL || hdrs == NULL) {
    braid_free(k);
    braid_free(hdrs);
    return BRAID_ENOMEM;
  }
  k->proto.ops = &hc_conn_ops;
  k->c = c;
  k->pool = p;
  k->hdrs = hdrs;
  k->timer = (braid_timer_t)BRAID_TIMER_INIT;
  k->next = p->conns;
  if (p->conns != NULL)
    p->conns->prev = k;
  p->conns = k;
  p->nconns++;
  c->nconns++;
  k->call = call;
  call->conn = k;
  braid_http_connect_cb fn =
      c->o.connect != NULL ? c->o.connect : hc_default_connect;
  /* connection_made may run inside this call. */
  int rc = p->https ? hc_tls_connect(c, p, &k->proto)
                    : fn(c->r, p->host, p->port, c->o.connect_timeout,
                         &k->proto, c->o.connect_arg);
  if (rc < 0) {
    /* No callback will come: undo. */
    if (k->prev != NULL)
      k->prev->next = k->next;
    else
      p->conns = k->next;
    if (k->next != NULL)
      k->next->prev = k->prev;
    p->nconns--;
    c->nconns--;
    call->conn = NULL;
    braid_free(hdrs);
    braid_free(k);
  }
  return rc;
}

/* ------------------------------------------------------------------------
 * The client
 * ------------------------------------------------------------------------ */

static void hc_fail_queued(braid_http_client_t *c) {
  for (hc_pool *p = c->pools; p != NULL; p = p->next) {
    while (p->qhead != NULL) {
      braid_http_call_t *call = p->qhead;
      hc_queue_remove(p, call);
      hc_call_fail(call, BRAID_ECANCELED, NULL);
    }
  }
}

/* Reactor teardown: connections are handles of their own and are aborted
 * after this one (their connection_lost fails their calls); attempts still
 * resolving end when teardown cancels the resolver's deferred. */
static void hc_client_abort_h(braid_teardown_t *h) {
  braid_http_client_t *c = BRAID_CONTAINER_OF(h, braid_http_client_t, h);
  c->have_handle = false;
  c->closing = true;
  hc_fail_queued(c);
  for (hc_pool *p = c->pools; p != NULL; p = p->next)
    for (hc_conn *k = p->conns; k != NULL; k = k->next)
      k->doomed = true;
  hc_client_maybe_free(c);
}

int braid_http_client_create(braid_reactor_t *r,
                             const braid_http_client_options *opts,
                             braid_http_client_t **out) {
  if (r == NULL || out == NULL)
    return BRAID_EINVAL;
  braid_http_client_t *c = braid_calloc(1, sizeof *c);
  if (c == NULL)
    return BRAID_ENOMEM;
  c->r = r;
  if (opts != NULL)
    c->o = *opts;
  braid_http_client_options *o = &c->o;
  if (o->connect_timeout == 0)
    o->connect_timeout = 30 * HC_SEC;
  if (o->response_timeout == 0)
    o->response_timeout = 60 * HC_SEC;
  if (o->idle_timeout == 0)
    o->idle_timeout = 60 * HC_SEC;
  if (o->body_timeout == 0)
    o->body_timeout = 60 * HC_SEC;
  if (o->continue_timeout == 0)
    o->continue_timeout = HC_SEC;
  if (o->max_per_host == 0)
    o->max_per_host = 6;
  if (o->max_idle_per_host == 0)
    o->max_idle_per_host = o->max_per_host;
  if (o->max_body_size == 0)
    o->max_body_size = (size_t)64 << 20;
  if (o->limits.max_headers == 0)
    o->limits.max_headers = 100;
  if (o->user_agent == NULL) {
    snprintf(c->ua, sizeof c->ua, "braid/%s", braid_version());
  } else {
    snprintf(c->ua, sizeof c->ua, "%s", o->user_agent);
  }
  o->user_agent = c->ua;
  braid_teardown_add(r, &c->h, hc_client_abort_h);
  c->have_handle = true;
  *out = c;
  return 0;
}

void braid_http_client_destroy(braid_http_client_t *c) {
  if (c == NULL || c->closing)
    return;
  if (c->have_handle)
    braid_teardown_remove(&c->h);
  c->have_handle = false;
  c->closing = true;
  hc_fail_queued(c);
  for (hc_pool *p = c->pools; p != NULL; p = p->next) {
    for (hc_conn *k = p->conns; k != NULL; k = k->next) {
      braid_http_call_t *call = k->call;
      k->call = NULL;
      hc_conn_abort(k);
      if (call != NULL) {
        call->conn = NULL;
        hc_call_fail(call, BRAID_ECANCELED, NULL);
      }
    }
  }
  hc_client_maybe_free(c);
}

size_t braid_http_client_open_connections(const braid_http_client_t *c) {
  return c != NULL ? c->nconns : 0;
}

size_t braid_http_client_idle_connections(const braid_http_client_t *c) {
  size_t n = 0;
  if (c != NULL)
    for (hc_pool *p = c->pools; p != NULL; p = p->next)
      n += p->nidle;
  return n;
}

/* ------------------------------------------------------------------------
 * Requests
 * ------------------------------------------------------------------------ */

static void hc_canceller(braid_deferred_t d, void *arg) {
  (void)d;
  braid_http_call_t *call = arg;
  call->d = braid_deferred_none(); /* braid errbacks it: ECANCELED */
  if (call->conn != NULL) {
    hc_conn *k = call->conn;
    k->call = NULL;
    call->conn = NULL;
    hc_conn_abort(k);
  } else {
    hc_queue_remove(call->pool, call);
  }
  hc_call_free(call);
}

static hc_pool *hc_pool_get(braid_http_client_t *c, const char *host,
                            uint16_t port, bool https) {
  for (hc_pool *p = c->pools; p != NULL; p = p->next)
    if (p->port == port && p->https == https && strcmp(p->host, host) == 0)
      return p;
  hc_pool *p = braid_calloc(1, sizeof *p);
  if (p == NULL)
    return NULL;
  snprintf(p->host, sizeof p->host, "%s", host);
  p->port = port;
  p->https = https;
  p->next = c->pools;
  c->pools = p;
  return p;
}

static int hc_build_head(braid_http_call_t *call, const char *method,
                         const braid_http_url_t *u,
                         const braid_http_request_options *o) {
  char *b = NULL;
  size_t len = 0, cap = 0;
  char line[512];
  int rc = 0;
#define ADD(p, n)                                                              \
  do {                                                                         \
    if (rc == 0)                                                               \
      rc = hc_buf_append(&b, &len, &cap, (p), (n));                            \
  } while (0)
#define ADDS(s) ADD((s), strlen(s))
  ADDS(method);
  ADDS(" ");
  if (u->path_len == 0 || u->path[0] != '/')
    ADDS("/");
  ADD(u->path, u->path_len);
  ADDS(" HTTP/1.1\r\nHost: ");
  if (u->ipv6)
    ADDS("[");
  ADDS(u->host);
  if (u->ipv6)
    ADDS("]");
  if (u->port != 80) {
    snprintf(line, sizeof line, ":%u", (unsigned)u->port);
    ADDS(line);
  }
  ADDS("\r\n");
  if (call->c->ua[0] != '\0') {
    ADDS("User-Agent: ");
    ADDS(call->c->ua);
    ADDS("\r\n");
  }
  for (size_t i = 0; i < o->num_headers; i++) {
    const braid_http_header_t *h = &o->headers[i];
    if (!hc_is_token(h->name.ptr, h->name.len) || hc_eq(h->name, "host") ||
        hc_eq(h->name, "content-length") ||
        hc_eq(h->name, "transfer-encoding") || hc_eq(h->name, "connection")) {
      braid_free(b);
      return BRAID_EINVAL;
    }
    for (size_t j = 0; j < h->value.len; j++) {
      unsigned char ch = (unsigned char)h->value.ptr[j];
      if ((ch < ' ' && ch != '\t') || ch == 0x7f) {
        braid_free(b);
        return BRAID_EINVAL; /* no header injection */
      }
    }
    ADD(h->name.ptr, h->name.len);
    ADDS(": ");
    ADD(h->value.ptr, h->value.len);
    ADDS("\r\n");
  }
  bool cl_method = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                   strcmp(method, "PATCH") == 0;
  if (o->stream_body) {
    if (o->body_length >= 0) {
      snprintf(line, sizeof line, "Content-Length: %" PRId64 "\r\n",
               o->body_length);
      ADDS(line);
    } else {
      ADDS("Transfer-Encoding: chunked\r\n");
    }
  } else if (o->body_len > 0 || cl_method) {
    /* RFC 9110 section 8.6: a POST/PUT without a body still says 0, so
     * the server need not wait for one. */
    snprintf(line, sizeof line, "Content-Length: %zu\r\n", o->body_len);
    ADDS(line);
  }
  if (o->expect_continue && (o->stream_body || o->body_len > 0))
    ADDS("Expect: 100-continue\r\n");
  ADDS("\r\n");
#undef ADD
#undef ADDS
  if (rc < 0) {
    braid_free(b);
    return rc;
  }
  call->head = b;
  call->head_len = len;
  return 0;
}

int braid_http_request_ex(braid_http_client_t *c,
                          const braid_http_request_options *o,
                          braid_deferred_t *out, braid_http_call_t **callp) {
  if (callp != NULL)
    *callp = NULL;
  if (c == NULL || o == NULL || o->url == NULL || out == NULL ||
      (o->body == NULL && o->body_len > 0) ||
      (o->stream_body && o->body_len > 0))
    return BRAID_EINVAL;
  if (c->closing)
    return BRAID_ECANCELED;
  const char *method = o->method != NULL ? o->method : "GET";
  if (!hc_is_token(method, strlen(method)))
    return BRAID_EINVAL;
  braid_http_url_t u;
  int rc = braid_http_url_parse(&u, o->url);
  if (rc < 0)
    return rc;
  braid_http_call_t *call = braid_calloc(1, sizeof *call);
  if (call == NULL)
    return BRAID_ENOMEM;
  call->c = c;
  call->cont_timer = (braid_timer_t)BRAID_TIMER_INIT;
  call->stream_body = o->stream_body;
  call->body_length = o->stream_body ? o->body_length : -1;
  call->chunked = o->stream_body && o->body_length < 0;
  call->expect_continue = o->expect_continue;
  call->is_head = strcmp(method, "HEAD") == 0;
  call->idempotent =
      strcmp(method, "GET") == 0 || call->is_head ||
      strcmp(method, "PUT") == 0 || strcmp(method, "DELETE") == 0 ||
      strcmp(method, "OPTIONS") == 0 || strcmp(method, "TRACE") == 0;
  if (o->handlers != NULL) {
    call->h = *o->handlers;
    call->streaming = o->handlers->body_data != NULL;
  }
  rc = hc_build_head(call, method, &u, o);
  if (rc == 0 && o->body_len > 0)
    rc = hc_buf_append(&call->body, &call->body_len, &call->body_cap, o->body,
                       o->body_len);
  if (rc == 0) {
    call->pool = hc_pool_get(c, u.host, u.port, u.https);
    if (call->pool == NULL)
      rc = BRAID_ENOMEM;
  }
  if (rc == 0)
    rc = braid_deferred_new_cancellable(c->r, hc_canceller, call, &call->d);
  if (rc < 0) {
    hc_call_free(call);
    return rc;
  }
  braid_deferred_t d = call->d;
  *out = d;
  if (callp != NULL)
    *callp = call;
  /* May fail the call (and free it) at once, e.g. a connect error known
   * immediately: then the deferred has fired and there is no handle. */
  bool alive = true;
  call->alive = &alive;
  hc_call_start(call, false);
  if (alive)
    call->alive = NULL;
  else if (callp != NULL)
    *callp = NULL;
  (void)d;
  return 0;
}

int braid_http_request(braid_http_client_t *c, const char *method,
                       const char *url, const braid_http_header_t *headers,
                       size_t num_headers, const void *body, size_t body_len,
                       braid_deferred_t *out) {
  braid_http_request_options o = {0};
  o.method = method;
  o.url = url;
  o.headers = headers;
  o.num_headers = num_headers;
  o.body = body;
  o.body_len = body_len;
  return braid_http_request_ex(c, &o, out, NULL);
}

/* Queue framed body bytes, or write them at once when the connection is up
 * and not waiting for 100 Continue. */
static int hc_call_emit(braid_http_call_t *call, const void *data, size_t n) {
  hc_conn *k = call->conn;
  if (k != NULL && k->t != NULL && k->connected && !call->waiting_continue &&
      k->call == call) {
    call->body_sent_any = true;
    return braid_transport_write(k->t, data, n);
  }
  return hc_buf_append(&call->body, &call->body_len, &call->body_cap, data, n);
}

int braid_http_call_write(braid_http_call_t *call, const void *data,
                          size_t len) {
  if (call == NULL || !call->stream_body || call->body_finished ||
      (data == NULL && len > 0))
    return BRAID_EINVAL;
  if (len == 0)
    return 0; /* a zero-size chunk would end a chunked body */
  if (call->body_length >= 0 &&
      call->body_written + len > (uint64_t)call->body_length)
    return BRAID_ELIMIT;
  int rc = 0;
  if (call->chunked) {
    char sz[24];
    int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
    rc = hc_call_emit(call, sz, (size_t)n);
    if (rc == 0)
      rc = hc_call_emit(call, data, len);
    if (rc == 0)
      rc = hc_call_emit(call, "\r\n", 2);
  } else {
    rc = hc_call_emit(call, data, len);
  }
  if (rc == 0)
    call->body_written += len;
  return rc;
}

int braid_http_call_finish(braid_http_call_t *call) {
  if (call == NULL || !call->stream_body || call->body_finished)
    return BRAID_EINVAL;
  if (call->body_length >= 0 &&
      call->body_written != (uint64_t)call->body_length)
    return BRAID_EINVAL; /* the server would wait for the rest */
  int rc = 0;
  if (call->chunked)
    rc = hc_call_emit(call, "0\r\n\r\n", 5);
  if (rc < 0)
    return rc;
  call->body_finished = true;
  hc_conn *k = call->conn;
  if (k != NULL && k->connected && k->call == call && !call->waiting_continue &&
      k->rstate == HC_HEAD && call->c->o.response_timeout != UINT64_MAX &&
      !braid_timer_active(&k->timer))
    hc_timer_arm(call->c->r, &k->timer, call->c->o.response_timeout,
                 hc_timer_cb, k);
  return 0;
}

int braid_http_call_pause(braid_http_call_t *call) {
  if (call == NULL || call->conn == NULL || call->conn->t == NULL)
    return BRAID_EINVAL;
  hc_conn *k = call->conn;
  k->paused = true;
  /* Silence is the caller's choice now, not the server's fault. */
  if (k->rstate == HC_BODY && braid_timer_active(&k->timer))
    braid_timer_cancel(&k->timer);
  return braid_transport_pause_reading(k->t);
}

int braid_http_call_resume(braid_http_call_t *call) {
  if (call == NULL || call->conn == NULL || call->conn->t == NULL)
    return BRAID_EINVAL;
  hc_conn *k = call->conn;
  k->paused = false;
  if (k->rstate == HC_BODY)
    hc_body_timer(k);
  return braid_transport_resume_reading(k->t);
}

int braid_http_call_abort(braid_http_call_t *call) {
  if (call == NULL)
    return BRAID_EINVAL;
  if (!braid_deferred_is_none(call->d))
    return braid_deferred_cancel(call->d);
  hc_conn *k = call->conn;
  if (k != NULL) {
    k->call = NULL;
    call->conn = NULL;
    hc_conn_abort(k);
  }
  hc_call_fail(call, BRAID_ECANCELED, NULL);
  return 0;
}
