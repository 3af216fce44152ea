/* The HTTP/1.1 server and static files over real loopback sockets (the
 * in-memory transport has not landed on main yet). The reactor runs on the
 * test's thread; each test's client runs on a second thread with blocking
 * sockets and a receive timeout, records what it saw, and stops the
 * reactor; the test then checks the record on its own thread (cmocka's
 * asserts are not thread-safe). Every test runs on the poller named by
 * BRAID_POLLER and tears everything down leak-free. */
#ifdef _WIN32
/* The HTTP server is POSIX only for now (see meson.build). */
int main(void) {
  return 77;
}
#else
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "braid/braid.h"
#include "braid/http.h"
#include "braid/testing.h"
#include "protocols/http/internal.h" /* the parse probe (a test hook) */

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

static uint64_t now_ms(void) {
  return braid_hrtime() / 1000000u;
}

/* ------------------------------------------------------------------------
 * A blocking HTTP client for the client thread
 * ------------------------------------------------------------------------ */

typedef struct cl {
  int fd;
  char buf[1 << 16];
  size_t len;
} cl;

typedef struct resp {
  int status;
  int minor;
  int keep_alive;
  char head[4096];
  char *body;
  size_t body_len;
  int error; /* 1: the connection closed or timed out before a response */
} resp;

static int cl_open(cl *c, uint16_t port, int rcvbuf) {
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0)
    return -1;
  struct timeval tv = {5, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (rcvbuf > 0)
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(0x7f000001);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  return 0;
}

static void cl_close(cl *c) {
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
}

static int cl_send(cl *c, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int cl_sends(cl *c, const char *s) {
  return cl_send(c, s, strlen(s));
}

/* More bytes into c->buf; 0 on EOF, -1 on error or timeout. */
static int cl_fill(cl *c) {
  if (c->len == sizeof c->buf)
    return -1;
  ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
  if (n <= 0)
    return n == 0 ? 0 : -1;
  c->len += (size_t)n;
  return 1;
}

static void cl_take(cl *c, size_t n) {
  memmove(c->buf, c->buf + n, c->len - n);
  c->len -= n;
}

static void body_add(resp *r, const char *p, size_t n) {
  r->body = realloc(r->body, r->body_len + n + 1);
  memcpy(r->body + r->body_len, p, n);
  r->body_len += n;
  r->body[r->body_len] = '\0';
}

static void resp_free(resp *r) {
  free(r->body);
  memset(r, 0, sizeof *r);
}

/* Read one response (1xx included) with the braid parser. */
static int cl_resp(cl *c, resp *r, int was_head) {
  memset(r, 0, sizeof *r);
  braid_http_header_t h[64];
  braid_http_response_t pr;
  int n;
  for (;;) {
    memset(&pr, 0, sizeof pr);
    pr.headers = h;
    pr.headers_cap = 64;
    pr.request_was_head = was_head;
    n = braid_http_parse_response(c->buf, c->len, &pr, NULL);
    if (n >= 0)
      break;
    if (n == BRAID_HTTP_ERROR || cl_fill(c) <= 0) {
      r->error = 1;
      return -1;
    }
  }
  r->status = pr.status;
  r->minor = pr.minor_version;
  r->keep_alive = pr.keep_alive;
  size_t hl = (size_t)n < sizeof r->head - 1 ? (size_t)n : sizeof r->head - 1;
  memcpy(r->head, c->buf, hl);
  r->head[hl] = '\0';
  braid_http_body_kind_t kind = pr.body_kind;
  uint64_t left = pr.content_length;
  cl_take(c, (size_t)n);
  body_add(r, "", 0);
  if (kind == BRAID_HTTP_BODY_LENGTH) {
    while (left > 0) {
      if (c->len == 0 && cl_fill(c) <= 0) {
        r->error = 1;
        return -1;
      }
      size_t take = c->len < left ? c->len : (size_t)left;
      body_add(r, c->buf, take);
      cl_take(c, take);
      left -= take;
    }
  } else if (kind == BRAID_HTTP_BODY_CHUNKED) {
    braid_http_chunked_decoder_t dec;
    memset(&dec, 0, sizeof dec);
    for (;;) {
      if (c->len == 0 && cl_fill(c) <= 0) {
        r->error = 1;
        return -1;
      }
      size_t dl = c->len;
      ptrdiff_t rc = braid_http_decode_chunked(&dec, c->buf, &dl);
      if (rc == BRAID_HTTP_ERROR) {
        r->error = 1;
        return -1;
      }
      body_add(r, c->buf, dl);
      if (rc >= 0) {
        memmove(c->buf, c->buf + dl, (size_t)rc);
        c->len = (size_t)rc;
        break;
      }
      c->len = 0;
    }
  } else if (kind == BRAID_HTTP_BODY_UNTIL_CLOSE) {
    for (;;) {
      body_add(r, c->buf, c->len);
      c->len = 0;
      int f = cl_fill(c);
      if (f == 0)
        break;
      if (f < 0) {
        r->error = 1;
        return -1;
      }
    }
  }
  return 0;
}

/* 1 if the server closes the connection (EOF or reset) within 5 s. */
static int cl_eof(cl *c) {
  for (;;) {
    char b[4096];
    ssize_t n = recv(c->fd, b, sizeof b, 0);
    if (n == 0)
      return 1;
    if (n < 0)
      return errno == ECONNRESET ? 1 : 0;
  }
}

static int has_header(const resp *r, const char *line) {
  return strstr(r->head, line) != NULL;
}

/* ------------------------------------------------------------------------
 * The server side
 * ------------------------------------------------------------------------ */

typedef struct env env;
typedef void (*client_fn)(env *e);

struct env {
  braid_reactor_t *r;
  braid_http_server_t *srv;
  braid_http_static_t *st;
  uint16_t port;
  char dir[64];
  client_fn client;
  /* server-side observations */
  int closed_calls;
  int pauses, resumes;
  int wrote_while_paused;
  uint64_t produced;
  int body_status;
  /* client-side record */
  resp res[8];
  int flags[8];
  uint64_t t0, t1;
  uint64_t sent;
};

static void hello(braid_http_req_t *req, void *arg) {
  (void)arg;
  braid_http_field_t f[1] = {{"Content-Type", "text/plain"}};
  braid_http_respond(req, 200, f, 1, "hello, world\n", 13);
}

/* Answers with the query after a delay: pipelined replies must still come
 * back in request order. */
typedef struct slow {
  braid_timer_t t;
  braid_http_req_t *req;
} slow;

static void slow_fire(braid_timer_t *t, void *arg) {
  (void)t;
  slow *s = arg;
  braid_http_view_t q = braid_http_req_query(s->req);
  braid_http_respond(s->req, 200, NULL, 0, q.ptr, q.len);
  free(s);
}

static void slow_h(braid_http_req_t *req, void *arg) {
  env *e = arg;
  slow *s = calloc(1, sizeof *s);
  s->req = req;
  braid_timer_start(e->r, &s->t, BRAID_MSEC(60), slow_fire, s);
}

/* Echo: streams the request body back, chunked, as it arrives. */
typedef struct echo {
  int started;
  int count_only;
  env *e;
} echo;

static void echo_data(braid_http_req_t *req, const void *d, size_t n,
                      void *arg) {
  echo *x = arg;
  if (x->count_only)
    return; /* /echo?count: answer at the end only */
  if (!x->started) {
    x->started = 1;
    braid_http_start(req, 200, NULL, 0, BRAID_HTTP_LENGTH_UNKNOWN);
  }
  braid_http_write(req, d, n);
}

static void echo_end(braid_http_req_t *req, int status, void *arg) {
  echo *x = arg;
  x->e->body_status = status;
  if (status == BRAID_ELIMIT && !x->started)
    braid_http_respond(req, 413, NULL, 0, "too big\n", 8);
  else if (status < 0 && !x->started)
    braid_http_respond(req, 400, NULL, 0, "bad\n", 4);
  else if (!x->started)
    braid_http_respond(req, 200, NULL, 0, NULL, 0);
  else
    braid_http_finish(req);
  free(x);
}

static const braid_http_body_ops echo_ops = {echo_data, echo_end};

static void echo_h(braid_http_req_t *req, void *arg) {
  echo *x = calloc(1, sizeof *x);
  x->e = arg;
  x->count_only = braid_http_req_query(req).ptr != NULL;
  braid_http_read_body(req, &echo_ops, x);
}

/* A producer that honours pause/resume: /stream?BYTES */
typedef struct prod {
  env *e;
  braid_http_req_t *req;
  uint64_t left, off;
  int paused;
} prod;

static void prod_run(prod *p) {
  char piece[16384];
  while (!p->paused && p->left > 0) {
    size_t n = p->left < sizeof piece ? (size_t)p->left : sizeof piece;
    for (size_t i = 0; i < n; i++)
      piece[i] = (char)('a' + (p->off + i) % 26);
    if (braid_http_write_paused(p->req))
      p->e->wrote_while_paused++;
    if (braid_http_write(p->req, piece, n) < 0)
      return; /* gone: `closed` follows */
    p->off += n;
    p->left -= n;
    p->e->produced += n;
  }
  if (p->left == 0) {
    braid_http_req_t *req = p->req;
    free(p);
    braid_http_finish(req);
  }
}

static void prod_pause(braid_http_req_t *req, void *arg) {
  (void)req;
  prod *p = arg;
  p->paused = 1;
  p->e->pauses++;
}

static void prod_resume(braid_http_req_t *req, void *arg) {
  (void)req;
  prod *p = arg;
  p->paused = 0;
  p->e->resumes++;
  prod_run(p);
}

static void prod_closed(braid_http_req_t *req, int reason, void *arg) {
  (void)req;
  (void)reason;
  prod *p = arg;
  p->e->closed_calls++;
  free(p);
}

static const braid_http_stream_ops prod_ops = {prod_pause, prod_resume,
                                               prod_closed};

static void stream_h(braid_http_req_t *req, void *arg) {
  prod *p = calloc(1, sizeof *p);
  p->e = arg;
  p->req = req;
  braid_http_view_t q = braid_http_req_query(req);
  p->left = q.ptr ? strtoull(q.ptr, NULL, 10) : 0;
  braid_http_set_stream_ops(req, &prod_ops, p);
  braid_http_start(req, 200, NULL, 0, p->left);
  prod_run(p);
}

/* A file sent as a chunked body (length unknown to the client): the
 * file path is read in pieces, each one framed. /filechunked?NAME */
static void filechunked_done(braid_http_req_t *req, int status, void *arg) {
  (void)status;
  close((int)(intptr_t)arg);
  braid_http_finish(req);
}

static void filechunked_h(braid_http_req_t *req, void *arg) {
  env *e = arg;
  braid_http_view_t q = braid_http_req_query(req);
  char path[256];
  snprintf(path, sizeof path, "%s/%.*s", e->dir, (int)q.len, q.ptr);
  int fd = open(path, O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    braid_http_respond(req, 404, NULL, 0, NULL, 0);
    return;
  }
  braid_http_start(req, 200, NULL, 0, BRAID_HTTP_LENGTH_UNKNOWN);
  /* Skip the first 10 bytes: offsets must be honoured. */
  if (braid_http_sendfile(req, fd, 10, (uint64_t)st.st_size - 10,
                          filechunked_done, (void *)(intptr_t)fd) < 0) {
    close(fd);
    braid_http_finish(req);
  }
}

static void *client_main(void *arg) {
  env *e = arg;
  e->client(e);
  return NULL;
}

static void stop_cb(braid_reactor_t *r, void *arg) {
  (void)arg;
  braid_reactor_release(r);
  braid_reactor_stop(r);
}

static void *client_wrap(void *arg) {
  env *e = arg;
  client_main(e);
  braid_call_from_thread(e->r, stop_cb, NULL);
  return NULL;
}

static void write_file(const char *dir, const char *name, const void *data,
                       size_t len) {
  char p[256];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  fclose(f);
}

static void env_start(env *e, const braid_http_server_options *o) {
  memset(e, 0, sizeof *e);
  assert_int_equal(braid_reactor_create(&e->r, NULL), 0);
  assert_int_equal(braid_http_server_create(e->r, o, &e->srv), 0);
  assert_int_equal(braid_http_route(e->srv, "GET", "/hello", hello, e), 0);
  assert_int_equal(braid_http_route(e->srv, "GET", "/slow", slow_h, e), 0);
  assert_int_equal(braid_http_route(e->srv, "POST", "/echo", echo_h, e), 0);
  assert_int_equal(braid_http_route(e->srv, "GET", "/stream", stream_h, e), 0);
  assert_int_equal(
      braid_http_route(e->srv, "GET", "/filechunked", filechunked_h, e), 0);
  snprintf(e->dir, sizeof e->dir, "/tmp/braid-http-test-XXXXXX");
  assert_non_null(mkdtemp(e->dir));
  assert_int_equal(braid_http_static_create(e->dir, NULL, &e->st), 0);
  assert_int_equal(braid_http_route(e->srv, NULL, "/files",
                                    braid_http_static_handler, e->st),
                   0);
  char err[128];
  assert_int_equal(braid_http_server_listen(e->srv,
                                            "tcp:port=0:interface=127.0.0.1",
                                            err, sizeof err),
                   0);
  braid_addr_t a;
  assert_int_equal(braid_http_server_addr(e->srv, &a), 0);
  e->port = braid_addr_port(&a);
}

static void env_run(env *e, client_fn fn) {
  pthread_t th;
  e->client = fn;
  braid_reactor_hold(e->r);
  assert_int_equal(pthread_create(&th, NULL, client_wrap, e), 0);
  assert_int_equal(braid_reactor_run(e->r), 0);
  pthread_join(th, NULL);
}

static void env_end(env *e) {
  braid_http_server_destroy(e->srv);
  assert_int_equal(braid_reactor_destroy(e->r), 0);
  braid_http_static_destroy(e->st);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->dir);
  assert_int_equal(system(cmd), 0);
  for (int i = 0; i < 8; i++)
    resp_free(&e->res[i]);
}

/* ------------------------------------------------------------------------
 * Keep-alive, pipelining, versions, HEAD
 * ------------------------------------------------------------------------ */

static void c_keepalive(env *e) {
  cl c;
  if (cl_open(&c, e->port, 0) < 0)
    return;
  for (int i = 0; i < 3; i++) {
    cl_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    cl_resp(&c, &e->res[i], 0);
  }
  cl_close(&c);
}

static void t_keepalive(void **st) {
  (void)st;
  env e;
  env_start(&e, NULL);
  env_run(&e, c_keepalive);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(e.res[i].error, 0);
    assert_int_equal(e.res[i].status, 200);
    assert_true(e.res[i].keep_alive);
    assert_string_equal(e.res[i].body, "hello, world\n");
    assert_true(has_header(&e.res[i], "Content-Length: 13\r\n"));
    assert_true(has_header(&e.res[i], "Date: "));
  }
  env_end(&e);
}

static void c_pipeline(env *e) {
  cl c;
  if (cl_open(&c, e->port, 0) < 0)
    return;
  /* Three requests in one segment; the slow ones answer later. */
  cl_sends(&c, "GET /slow?first HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /slow?third HTTP/1.1\r\nHost: x\r\n\r\n"
               "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_resp(&c, &e->res[0], 0);
  cl_resp(&c, &e->res[1], 0);
  cl_resp(&c, &e->res[2], 0);
  cl_resp(&c, &e->res[3], 1);
  cl_close(&c);
}

static void t_pipeline(void **st) {
  (void)st;
  env e;
  env_start(&e, NULL);
  env_run(&e, c_pipeline);
  assert_string_equal(e.res[0].body, "first");
  assert_string_equal(e.res[1].body, "hello, world\n");
  assert_string_equal(e.res[2].body, "third");
  assert_int_equal(e.res[3].status, 200);
  assert_int_equal(e.res[3].body_len, 0); /* HEAD: no body */
  assert_true(has_header(&e.res[3], "Content-Length: 13\r\n"));
  env_end(&e);
}

static void c_versions(env *e) {
  cl c;
  /* HTTP/1.0: closed after the response by default. */
  if (cl_open(&c, e->port, 0) == 0) {
    cl_sends(&c, "GET /hello HTTP/1.0\r\n\r\n");
    cl_resp(&c, &e->res[0], 0);
    e->flags[0] = cl_eof(&c);
    cl_close(&c);
  }
  /* HTTP/1.0 with keep-alive: stays open for a second request. */
  if (cl_open(&c, e->port, 0) == 0) {
    cl_sends(&c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    cl_resp(&c, &e->res[1], 0);
    cl_sends(&c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    cl_resp(&c, &e->res[2], 0);
    cl_close(&c);
  }
  /* HTTP/1.1 with Connection: close. */
  if (cl_open(&c, e->port, 0) == 0) {
    cl_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    cl_resp(&c, &e->res[3], 0);
    e->flags[3] = cl_eof(&c);
    cl_close(&c);
  }
  /* HTTP/1.0 streamed response of unknown length: close-delimited. */
  if (cl_open(&c, e->port, 0) == 0) {
    cl_sends(&c, "POST /echo HTTP/1.0\r\nContent-Length: 5\r\n\r\nabcde");
    cl_resp(&c, &e->res[4], 0);
    cl_close(&c);
  }
}

static void t_versions(void **st) {
  (void)st;
  env e;
  env_start(&e, NULL);
  env_run(&e, c_versions);
  assert_int_equal(e.res[0].status, 200);
  assert_true(has_header(&e.res[0], "Connection: close"));
  assert_true(e.flags[0]);
  assert_true(has_header(&e.res[1], "Connection: keep-alive"));
  assert_int_equal(e.res[2].status, 200);
  assert_true(has_header(&e.res[3], "Connection: close"));
  assert_true(e.flags[3]);
  assert_int_equal(e.res[4].error, 0);
  assert_string_equal(e.res[4].body, "abcde");
  assert_false(has_header(&e.res[4], "chunked"));
  env_end(&e);
}

/* ------------------------------------------------------------------------
 * Errors from the parser, routing
 * ------------------------------------------------------------------------ */

static const char *const bad_requests[] = {
    "GARBAGE\r\n\r\n",
    "GET /hello HTTP/2.0\r\nHost: x\r\n\r\n",
    "GET /hello HTTP/1.1\r\n\r\n", /* no Host */
    ("POST /echo HTTP/1.1\r\nHost: x\r\n"
     "Transfer-Encoding: gzip, chunked\r\n\r\n"),
    "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
    "GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n",
    "DELETE /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /he%00llo HTTP/1.1\r\nHost: x\r\n\r\n",
};
static const int bad_status[] = {400, 505, 400, 501, 413, 404, 405, 400};

static void c_errors(env *e) {
  for (int i = 0; i < 8; i++) {
    cl c;
    if (cl_open(&c, e->port, 0) < 0)
      return;
    cl_sends(&c, bad_requests[i]);
    cl_resp(&c, &e->res[i], 0);
    /* Parse errors close the connection; 404 and 405 do not. */
    e->flags[i] = i == 5 || i == 6 ? 1 : cl_eof(&c);
    cl_close(&c);
  }
}

static void t_errors(void **st) {
  (void)st;
  env e;
  env_start(&e, NULL);
  env_run(&e, c_errors);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(e.res[i].error, 0);
    assert_int_equal(e.res[i].status, bad_status[i]);
    assert_true(e.flags[i]);
  }
  assert_true(has_header(&e.res[6], "Allow: "));
  env_end(&e);
}

static void c_limits(env *e) {
  cl c;
  /* 414: a long target. */
  if (cl_open(&c, e->port, 0) == 0) {
    char *big = malloc(20000);
    memset(big, 'a', 20000);
    cl_sends(&c, "GET /");
    cl_send(&c, big, 20000);
    cl_sends(&c, " HTTP/1.1\r\nHost: x\r\n\r\n");
    cl_resp(&c, &e->res[0], 0);
    cl_close(&c);
    free(big);
  }
  /* 431: too many header bytes. */
  if (cl_open(&c, e->port, 0) == 0) {
    cl_sends(&c, "GET / HTTP/1.1\r\nHost: x\r\n");
    char line[128];
    for (int i = 0; i < 400; i++) {
      snprintf(line, sizeof line, "X-Filler-%d: %080d\r\n", i, i);
      if (cl_sends(&c, line) < 0)
        break;
    }
    cl_sends(&c, "\r\n");
    cl_resp(&c, &e->res[1], 0);
    cl_close(&c);
  }
}

static void t_limits(void **st) {
  (void)st;
  env e;
  env_start(&e, NULL);
  env_run(&e, c_limits);
  assert_int_equal(e.res[0].status, 414);
  assert_int_equal(e.res[1].status, 431);
  env_end(&e);
}

/* ------------------------------------------------------------------------
 * Request bodies
 * ------------------------------------------------------------------------ */

static void c_bodies(env *e) {
  cl c;
  if (cl_open(&c, e->port, 0) < 0)
    return;
  cl_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
               "hello there");
  cl_resp(&c, &e->res[0], 0);
  cl_sends(&c,
           "POST /echo HTTP/1.1\r\nHost: x\r\n"
           "Transfer-Encoding: chunked\r\n\r\n"
           "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\n");
  cl_resp(&c, &e->res[1], 0);
  /* Expect: 100-continue: the 100 comes before we send the body. */
  cl_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
               "Expect: 100-continue\r\n\r\n");
  cl_resp(&c, &e->res[2], 0);
  cl_sends(&c, "ping");
  cl_resp(&c, &e->res[3], 0);
  /* The body of a request whose handler ignores it is skipped. */
  cl_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz"
               "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_resp(&c, &e->res[4], 0);
  cl_resp(&c, &e->res[5], 0);
  cl_close(&c);
  /* A chunked body over max_body: the handler answers 413. */
  if (cl_open(&c, e->port, 0) == 0) {
    cl_sends(&c, "POST /echo?count HTTP/1.1\r\nHost: x\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n");
    char chunk[1100];
    snprintf(chunk, sizeof chunk, "400\r\n");
    memset(chunk + 5, 'z', 1024);
    memcpy(chunk + 5 + 1024, "\r\n", 2);
    /* Send until the server answers; it reads ahead a little. */
    for (int i = 0; i < 4; i++)
      if (cl_send(&c, chunk, 5 + 1024 + 2) < 0)
        break;
    cl_resp(&c, &e->res[6], 0);
    cl_close(&c);
  }
}

static void t_bodies(void **st) {
  (void)st;
  env e;
  braid_http_server_options o = {0};
  o.max_body = 2048;
  env_start(&e, &o);
  env_run(&e, c_bodies);
  assert_int_equal(e.res[0].status, 200);
  assert_string_equal(e.res[0].body, "hello there");
  assert_true(has_header(&e.res[0], "Transfer-Encoding: chunked"));
  assert_string_equal(e.res[1].body, "hello world");
  assert_int_equal(e.res[2].status, 100);
  assert_int_equal(e.res[3].status, 200);
  assert_string_equal(e.res[3].body, "ping");
  assert_string_equal(e.res[4].body, "hello, world\n");
  assert_string_equal(e.res[5].body, "hello, world\n");
  assert_int_equal(e.res[6].status, 413);
  assert_int_equal(e.body_status, BRAID_ELIMIT);
  env_end(&e);
}

/* ------------------------------------------------------------------------
 * Timeouts
 * ------------------------------------------------------------------------ */

static void c_slowloris(env *e) {
  cl c;
  if (cl_open(&c, e->port, 0) < 0)
    return;
  e->t0 = now_ms();
  /* One byte every 50 ms: each byte is progress, but the head as a whole
   * is too slow. */
  const char *head = "GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n\r\n";
  for (size_t i = 0; head[i] != '\0'; i++) {
    if (cl_send(&c, head + i, 1) < 0)
      break;
    sleep_ms(50);
    /* Stop once the answer is there: the server drops a lingering
     * connection soon after, and a reset discards unread data. */
    char peek;
    if (recv(c.fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
      break;
    if (now_ms() - e->t0 > 600)
      break;
  }
  cl_resp(&c, &e->res[0], 0);
  e->flags[0] = cl_eof(&c);
  e->t1 = now_ms();
  cl_close(&c);
  /* Idle keep-alive connection: closed without a word. */
  if (cl_open(&c, e->port, 0) == 0) {
    uint64_t t = now_ms();
    e->flags[1] = cl_eof(&c);
    e->flags[2] = (int)(now_ms() - t);
    cl_close(&c);
  }
}

/* A head that arrives one byte per segment, in time: every 1-byte read
 * must be delivered (a 1-byte inline completion once looked "pending"). */
static void c_bytewise(env *e) {
  cl c;
  if (cl_open(&c, e->port, 0) < 0)
    return;
  const char *head = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int k = 0; k < 2; k++) {
    for (size_t i = 0; head[i] != '\0'; i++) {
      cl_send(&c, head + i, 1);
      sleep_ms(3);
    }
    cl_resp(&c, &e->res[k], 0);
  }
  cl_close(&c);
}

static void t_bytewise(void **st) {
  (void)st;
  env e;
  env_start(&e, NULL);
  env_run(&e, c_bytewise);
  assert_int_equal(e.res[0].status, 200);
  assert_string_equal(e.res[0].body, "hello, world\n");
  assert_int_equal(e.res[1].status, 200);
  env_end(&e);
}

static void t_timeouts(void **st) {
  (void)st;
  env e;
  braid_http_server_options o = {0};
  o.header_timeout = BRAID_MSEC(300);
  o.idle_timeout = BRAID_MSEC(200);
  env_start(&e, &o);
  env_run(&e, c_slowloris);
  assert_int_equal(e.res[0].status, 408);
  assert_true(e.flags[0]);
  assert_true(e.t1 - e.t0 < 1500);
  assert_true(e.flags[1]);
  assert_true(e.flags[2] >= 150 && e.flags[2] < 2000);
  env_end(&e);
}

/* ------------------------------------------------------------------------
 * Flow control: a slow reader of a large body
 * ------------------------------------------------------------------------ */

#define STREAM_BYTES (8u * 1024u * 1024u)

static void c_slow_reader(env *e) {
  cl c;
  if (cl_open(&c, e->port, 8192) < 0)
    return;
  char req[64];
  snprintf(req, sizeof req, "GET /stream?%u HTTP/1.1\r\nHost: x\r\n\r\n",
           STREAM_BYTES);
  cl_sends(&c, req);
  sleep_ms(300); /* let the server hit the window */
  resp r;
  cl_resp(&c, &r, 0);
  e->res[0].status = r.status;
  e->res[0].error = r.error;
  int ok = r.body_len == STREAM_BYTES;
  for (size_t i = 0; ok && i < r.body_len; i++)
    if (r.body[i] != (char)('a' + i % 26))
      ok = 0;
  e->flags[0] = ok;
  resp_free(&r);
  /* A client that goes away mid-stream: the producer hears `closed`. */
  if (cl_open(&c, e->port, 8192) == 0) {
    cl_sends(&c, req);
    char b[1000];
    recv(c.fd, b, sizeof b, 0);
    cl_close(&c);
    sleep_ms(200);
  }
}

static void t_flow_control(void **st) {
  (void)st;
  env e;
  env_start(&e, NULL);
  env_run(&e, c_slow_reader);
  assert_int_equal(e.res[0].error, 0);
  assert_int_equal(e.res[0].status, 200);
  assert_true(e.flags[0]);
  assert_true(e.pauses >= 1);
  assert_true(e.resumes >= 1);
  assert_int_equal(e.wrote_while_paused, 0);
  assert_int_equal(e.closed_calls, 1);
  env_end(&e);
}

/* ------------------------------------------------------------------------
 * Static files
 * ------------------------------------------------------------------------ */

static char *big_data(size_t n) {
  char *b = malloc(n);
  for (size_t i = 0; i < n; i++)
    b[i] = (char)((i * 7919u) >> 3);
  return b;
}

#define BIG (3u * 1024u * 1024u + 17u)

static void get(cl *c, const char *target, const char *extra, resp *r,
                int head) {
  char req[1024];
  snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n",
           head ? "HEAD" : "GET", target, extra ? extra : "");
  cl_sends(c, req);
  cl_resp(c, r, head);
}

static void c_static(env *e) {
  cl c;
  if (cl_open(&c, e->port, 0) < 0)
    return;
  get(&c, "/files/big.bin", NULL, &e->res[0], 0);
  get(&c, "/files/big.bin", "Range: bytes=1000-1999\r\n", &e->res[1], 0);
  get(&c, "/files/big.bin", "Range: bytes=99999999-\r\n", &e->res[2], 0);
  get(&c, "/files/a.txt", "Range: bytes=0-1,3-4\r\n", &e->res[3], 0);
  get(&c, "/files/a.txt", "Range: bytes=-3\r\n", &e->res[4], 0);
  /* Conditionals: take the validators from the first answer. */
  resp r;
  get(&c, "/files/a.txt", NULL, &r, 0);
  char etag[128] = "", lm[64] = "", extra[256];
  const char *p = strstr(r.head, "ETag: ");
  if (p != NULL)
    sscanf(p + 6, "%127[^\r]", etag);
  p = strstr(r.head, "Last-Modified: ");
  if (p != NULL)
    sscanf(p + 15, "%63[^\r]", lm);
  resp_free(&r);
  snprintf(extra, sizeof extra, "If-None-Match: \"zzz\", %s\r\n", etag);
  get(&c, "/files/a.txt", extra, &e->res[5], 0);
  snprintf(extra, sizeof extra, "If-Modified-Since: %s\r\n", lm);
  get(&c, "/files/a.txt", extra, &e->res[6], 0);
  get(&c, "/files/a.txt", NULL, &e->res[7], 1); /* HEAD */
  /* The same big file as a chunked body; then the connection is still
   * good for another request. */
  resp fr;
  get(&c, "/filechunked?big.bin", NULL, &fr, 0);
  e->flags[0] = fr.status == 200 && fr.body_len == BIG - 10 &&
                has_header(&fr, "Transfer-Encoding: chunked");
  char *want = big_data(BIG);
  e->flags[0] = e->flags[0] && memcmp(fr.body, want + 10, BIG - 10) == 0;
  free(want);
  resp_free(&fr);
  get(&c, "/hello", NULL, &fr, 0);
  e->flags[1] = fr.status == 200;
  resp_free(&fr);
  cl_close(&c);
}

static void t_static(void **st) {
  (void)st;
  for (int sf = 0; sf < 2; sf++) {
    env e;
    braid_http_server_options o = {0};
    o.no_sendfile = sf == 1; /* both the sendfile and the read path */
    env_start(&e, &o);
    char *big = big_data(BIG);
    write_file(e.dir, "big.bin", big, BIG);
    write_file(e.dir, "a.txt", "0123456789", 10);
    env_run(&e, c_static);
    assert_int_equal(e.res[0].status, 200);
    assert_int_equal(e.res[0].body_len, BIG);
    assert_memory_equal(e.res[0].body, big, BIG);
    assert_true(
        has_header(&e.res[0], "Content-Type: application/octet-stream"));
    assert_true(has_header(&e.res[0], "Accept-Ranges: bytes"));
    assert_int_equal(e.res[1].status, 206);
    assert_int_equal(e.res[1].body_len, 1000);
    assert_memory_equal(e.res[1].body, big + 1000, 1000);
    char cr[64];
    snprintf(cr, sizeof cr, "Content-Range: bytes 1000-1999/%u", BIG);
    assert_true(has_header(&e.res[1], cr));
    assert_int_equal(e.res[2].status, 416);
    snprintf(cr, sizeof cr, "Content-Range: bytes */%u", BIG);
    assert_true(has_header(&e.res[2], cr));
    assert_int_equal(e.res[3].status, 200); /* several ranges: all */
    assert_string_equal(e.res[3].body, "0123456789");
    assert_int_equal(e.res[4].status, 206);
    assert_string_equal(e.res[4].body, "789");
    assert_int_equal(e.res[5].status, 304);
    assert_int_equal(e.res[5].body_len, 0);
    assert_int_equal(e.res[6].status, 304);
    assert_int_equal(e.res[7].status, 200);
    assert_int_equal(e.res[7].body_len, 0);
    assert_true(has_header(&e.res[7], "Content-Length: 10\r\n"));
    assert_true(has_header(&e.res[7], "text/plain"));
    assert_true(e.flags[0]);
    assert_true(e.flags[1]);
    free(big);
    env_end(&e);
  }
}

static void c_traversal(env *e) {
  static const char *const targets[] = {
      "/files/../secret.txt",
      "/files/%2e%2e/secret.txt",
      "/files/%2E%2E%2fsecret.txt",
      "/files/a%00.txt",
      "/files/sub",
      "/files/sub/",
      "/files/no-such-file",
      "/files/link",
  };
  for (int i = 0; i < 8; i++) {
    cl c;
    if (cl_open(&c, e->port, 0) < 0)
      return;
    get(&c, targets[i], NULL, &e->res[i], 0);
    cl_close(&c);
  }
}

static void t_traversal_listing(void **st) {
  (void)st;
  env e;
  env_start(&e, NULL);
  char sub[128];
  snprintf(sub, sizeof sub, "%s/sub", e.dir);
  assert_int_equal(mkdir(sub, 0755), 0);
  write_file(sub, "<b>&\"x\".txt", "x", 1);
  write_file(sub, "page.html", "<p>", 3);
  /* A symlink that leaves the root is refused. */
  char link[128];
  snprintf(link, sizeof link, "%s/link", e.dir);
  assert_int_equal(symlink("/etc/hostname", link), 0);
  env_run(&e, c_traversal);
  for (int i = 0; i < 3; i++)
    assert_true(e.res[i].status == 403 || e.res[i].status == 404 ||
                e.res[i].status == 400);
  assert_int_equal(e.res[3].status, 400); /* a decoded NUL */
  assert_int_equal(e.res[4].status, 301);
  assert_true(has_header(&e.res[4], "Location: /files/sub/\r\n"));
  assert_int_equal(e.res[5].status, 200);
  assert_non_null(strstr(e.res[5].body, "&lt;b&gt;&amp;&quot;x&quot;.txt"));
  assert_non_null(strstr(e.res[5].body, "href=\"%3Cb%3E%26%22x%22.txt\""));
  assert_null(strstr(e.res[5].body, "<b>"));
  assert_non_null(strstr(e.res[5].body, "page.html"));
  assert_int_equal(e.res[6].status, 404);
  assert_int_equal(e.res[7].status, 403);
  env_end(&e);
}

/* ------------------------------------------------------------------------
 * Pure functions
 * ------------------------------------------------------------------------ */

static void t_helpers(void **st) {
  (void)st;
  char buf[64];
  size_t n = braid_http_date_format(784111777, buf);
  assert_int_equal(n, 29);
  assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
  int64_t t;
  assert_int_equal(braid_http_date_parse(buf, n, &t), 0);
  assert_int_equal(t, 784111777);
  const char *rfc850 = "Sunday, 06-Nov-94 08:49:37 GMT";
  assert_int_equal(braid_http_date_parse(rfc850, strlen(rfc850), &t), 0);
  assert_int_equal(t, 784111777);
  const char *asc = "Sun Nov  6 08:49:37 1994";
  assert_int_equal(braid_http_date_parse(asc, strlen(asc), &t), 0);
  assert_int_equal(t, 784111777);
  assert_int_equal(braid_http_date_parse("yesterday", 9, &t), BRAID_EINVAL);

  assert_int_equal(braid_http_path_decode("/a%20b%2Fc", 10, buf), 6);
  assert_string_equal(buf, "/a b/c");
  assert_int_equal(braid_http_path_decode("/a%2", 4, buf), BRAID_EINVAL);
  assert_int_equal(braid_http_path_decode("/a%zz", 5, buf), BRAID_EINVAL);
  assert_int_equal(braid_http_path_decode("/a%00", 5, buf), BRAID_EINVAL);

  assert_string_equal(braid_http_mime_type("x/index.HTML"),
                      "text/html; charset=utf-8");
  assert_string_equal(braid_http_mime_type("a.css"), "text/css; charset=utf-8");
  assert_string_equal(braid_http_mime_type("a.js"),
                      "text/javascript; charset=utf-8");
  assert_string_equal(braid_http_mime_type("a.png"), "image/png");
  assert_string_equal(braid_http_mime_type("a.wasm"), "application/wasm");
  assert_string_equal(braid_http_mime_type("a.svg"), "image/svg+xml");
  assert_string_equal(braid_http_mime_type("Makefile"),
                      "application/octet-stream");
  assert_string_equal(braid_http_mime_type(".bashrc"),
                      "application/octet-stream");
  assert_string_equal(braid_http_reason(404), "Not Found");
}

static void route_tag(braid_http_req_t *req, void *arg) {
  char body[256];
  int n = snprintf(body, sizeof body, "%s|%s", (const char *)arg,
                   braid_http_req_rest(req));
  braid_http_respond(req, 200, NULL, 0, body, (size_t)n);
}

static void c_routes(env *e) {
  static const char *const targets[] = {"/api",    "/api/v1/x", "/apix",
                                        "/api/v2", "/",         "/other/y"};
  cl c;
  if (cl_open(&c, e->port, 0) < 0)
    return;
  for (int i = 0; i < 6; i++)
    get(&c, targets[i], NULL, &e->res[i], 0);
  cl_close(&c);
}

static void t_routes(void **st) {
  (void)st;
  env e;
  env_start(&e, NULL);
  assert_int_equal(braid_http_route(e.srv, NULL, "/", route_tag, "root"), 0);
  assert_int_equal(braid_http_route(e.srv, "GET", "/api", route_tag, "api"), 0);
  assert_int_equal(braid_http_route(e.srv, "GET", "/api/v1/", route_tag, "v1"),
                   0);
  assert_int_equal(braid_http_route(e.srv, "GET", "/api", route_tag, "dup"),
                   BRAID_EEXIST);
  assert_int_equal(braid_http_route(e.srv, "GET", "nope", route_tag, "x"),
                   BRAID_EINVAL);
  env_run(&e, c_routes);
  assert_string_equal(e.res[0].body, "api|");
  assert_string_equal(e.res[1].body, "v1|/x");
  assert_string_equal(e.res[2].body, "root|/apix"); /* segment boundary */
  assert_string_equal(e.res[3].body, "api|/v2");
  assert_string_equal(e.res[4].body, "root|/");
  assert_string_equal(e.res[5].body, "root|/other/y");
  env_end(&e);
}

/* ------------------------------------------------------------------------
 * The same server over the memory transport with a manual clock:
 * deterministic timeouts, flow control and the access log.
 * ------------------------------------------------------------------------ */

typedef struct logcap {
  char lines[8][256];
  int n;
} logcap;

static void log_capture(void *arg, braid_log_level level, const char *domain,
                        const char *msg) {
  logcap *lc = arg;
  if (strcmp(domain, "access") == 0 && level == BRAID_LOG_INFO && lc->n < 8)
    snprintf(lc->lines[lc->n++], sizeof lc->lines[0], "%s", msg);
}

typedef struct menv {
  env e; /* handlers take an env */
  braid_memory_transport_t *mt;
  logcap log;
} menv;

static void menv_start(menv *m, const braid_http_server_options *o) {
  memset(m, 0, sizeof *m);
  assert_int_equal(braid_testing_reactor_create(&m->e.r), 0);
  braid_reactor_set_log(m->e.r, log_capture, &m->log);
  assert_int_equal(braid_http_server_create(m->e.r, o, &m->e.srv), 0);
  env *e = &m->e;
  assert_int_equal(braid_http_route(e->srv, "GET", "/hello", hello, e), 0);
  assert_int_equal(braid_http_route(e->srv, "GET", "/slow", slow_h, e), 0);
  assert_int_equal(braid_http_route(e->srv, "POST", "/echo", echo_h, e), 0);
  assert_int_equal(braid_http_route(e->srv, "GET", "/stream", stream_h, e), 0);
  braid_factory_t *f = braid_http_server_factory(e->srv);
  braid_addr_t peer;
  braid_addr_ip(&peer, "192.168.1.1", 54321);
  braid_protocol_t *p = f->build(f, &peer);
  assert_non_null(p);
  assert_int_equal(braid_memory_transport_create(e->r, p, &m->mt), 0);
}

static void menv_end(menv *m) {
  braid_memory_transport_destroy(m->mt);
  braid_http_server_destroy(m->e.srv);
  assert_int_equal(braid_reactor_destroy(m->e.r), 0);
}

static int mfeed(menv *m, const char *s) {
  return braid_memory_transport_feed(m->mt, s, strlen(s));
}

/* The value buffer as a C string (it is not NUL-terminated). */
static const char *mvalue(menv *m) {
  static char copy[1 << 16];
  size_t len;
  const void *v = braid_memory_transport_value(m->mt, &len);
  if (len >= sizeof copy)
    len = sizeof copy - 1;
  memcpy(copy, v, len);
  copy[len] = '\0';
  return copy;
}

static void t_mem_pipeline_log(void **st) {
  (void)st;
  menv m;
  menv_start(&m, NULL);
  /* Two requests in one feed, the first answered later: nothing of the
   * second may appear before the first. */
  mfeed(&m, "GET /slow?one HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_string_equal(mvalue(&m), "");
  braid_clock_advance(m.e.r, BRAID_MSEC(60));
  braid_clock_advance(m.e.r, 0);
  const char *v = mvalue(&m);
  const char *one = strstr(v, "\r\n\r\none");
  const char *hello = strstr(v, "hello, world\n");
  assert_non_null(one);
  assert_non_null(hello);
  assert_true(one < hello);
  assert_int_equal(m.log.n, 2);
  /* 192.168.1.1 - - [22/Nov/2026:03:23:05 +0000] "GET /slow?one HTTP/1.1" 200 3
   */
  assert_non_null(strstr(m.log.lines[0], "192.168.1.1 - - ["));
  assert_non_null(
      strstr(m.log.lines[0], " +0000] \"GET /slow?one HTTP/1.1\" 200 3"));
  assert_non_null(strstr(m.log.lines[1], "\"GET /hello HTTP/1.1\" 200 13"));
  /* A quote in the target cannot forge a log field. */
  mfeed(&m, "GET /hello?a\"b HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(m.log.n, 3);
  assert_non_null(strstr(m.log.lines[2], "/hello?a\\x22b"));
  braid_memory_transport_clear(m.mt);
  mfeed(&m, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_non_null(strstr(mvalue(&m), "HTTP/1.1 204 No Content\r\n"));
  m.log.n = 3;
  assert_false(braid_memory_transport_disconnected(m.mt, NULL));
  /* The client goes away while a slow answer is pending: the request
   * stays valid (a zombie) until the handler answers, which then fails
   * quietly and frees it. It is logged once, when the connection is
   * lost, as nginx's 499 ("client closed request"). */
  mfeed(&m, "GET /slow?late HTTP/1.1\r\nHost: x\r\n\r\n");
  braid_memory_transport_lose(m.mt, BRAID_ECONNRESET);
  assert_true(braid_memory_transport_disconnected(m.mt, NULL));
  assert_int_equal(m.log.n, 4);
  assert_non_null(strstr(m.log.lines[3], "\"GET /slow?late HTTP/1.1\" 499 0"));
  braid_clock_advance(m.e.r, BRAID_MSEC(60));
  assert_int_equal(m.log.n, 4);
  menv_end(&m);
}

static void t_mem_timeouts(void **st) {
  (void)st;
  menv m;
  braid_http_server_options o = {0};
  o.header_timeout = BRAID_SEC(10);
  o.idle_timeout = BRAID_SEC(60);
  menv_start(&m, &o);
  /* The head timeout runs from the first byte and more bytes do not
   * restart it. */
  mfeed(&m, "GET /hello HT");
  braid_clock_advance(m.e.r, BRAID_SEC(5));
  mfeed(&m, "TP/1.1\r\n");
  braid_clock_advance(m.e.r, BRAID_SEC(4));
  mfeed(&m, "Host: x\r\n");
  assert_string_equal(mvalue(&m), "");
  braid_clock_advance(m.e.r, BRAID_MSEC(1001));
  assert_non_null(strstr(mvalue(&m), "HTTP/1.1 408 Request Timeout\r\n"));
  assert_non_null(strstr(mvalue(&m), "Connection: close\r\n"));
  assert_true(braid_memory_transport_write_shut(m.mt) ||
              braid_memory_transport_closing(m.mt));
  menv_end(&m);

  /* Idle keep-alive: closed silently after idle_timeout, not before. */
  menv_start(&m, &o);
  mfeed(&m, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  braid_memory_transport_clear(m.mt);
  braid_clock_advance(m.e.r, BRAID_SEC(59));
  assert_false(braid_memory_transport_closing(m.mt));
  braid_clock_advance(m.e.r, BRAID_SEC(2));
  assert_true(braid_memory_transport_closing(m.mt) ||
              braid_memory_transport_disconnected(m.mt, NULL));
  assert_string_equal(mvalue(&m), "");
  menv_end(&m);
}

static void t_mem_flow(void **st) {
  (void)st;
  menv m;
  menv_start(&m, NULL);
  braid_memory_transport_set_consumer_blocked(m.mt, true);
  mfeed(&m, "GET /stream?4000000 HTTP/1.1\r\nHost: x\r\n\r\n");
  /* The producer stopped at the transport's window: memory is bounded by
   * the high-water mark plus one piece, not by the body. */
  assert_int_equal(m.e.pauses, 1);
  size_t q =
      braid_transport_write_queued(braid_memory_transport_transport(m.mt));
  assert_true(q <= 64u * 1024u + 16384u + 512u);
  assert_true(m.e.produced < 100000);
  /* The peer reads slowly: production follows. */
  size_t total = 0;
  for (int i = 0; i < 10000 && !(m.e.produced == 4000000 && q == 0); i++) {
    braid_memory_transport_drain(m.mt, 50000);
    size_t len;
    braid_memory_transport_value(m.mt, &len);
    total += len;
    braid_memory_transport_clear(m.mt);
    q = braid_transport_write_queued(braid_memory_transport_transport(m.mt));
    assert_true(q <= 64u * 1024u + 16384u + 512u);
  }
  assert_int_equal(m.e.produced, 4000000);
  assert_true(total > 4000000); /* body plus head */
  assert_true(m.e.resumes >= 1);
  assert_int_equal(m.e.wrote_while_paused, 0);
  /* A second stream, and the peer drops mid-way: `closed` runs once. */
  mfeed(&m, "GET /stream?4000000 HTTP/1.1\r\nHost: x\r\n\r\n");
  braid_memory_transport_lose(m.mt, BRAID_ECONNRESET);
  assert_int_equal(m.e.closed_calls, 1);
  menv_end(&m);
}

static void t_mem_continue(void **st) {
  (void)st;
  menv m;
  menv_start(&m, NULL);
  /* A handler that never reads the body: no 100, the response says
   * close, and the connection ends after it. */
  mfeed(&m, "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Expect: 100-continue\r\n\r\n");
  const char *v = mvalue(&m);
  assert_null(strstr(v, "100 Continue"));
  assert_non_null(strstr(v, "405")); /* /hello is GET only */
  menv_end(&m);

  menv_start(&m, NULL);
  mfeed(&m, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Expect: 100-continue\r\n\r\n");
  assert_string_equal(mvalue(&m), "HTTP/1.1 100 Continue\r\n\r\n");
  mfeed(&m, "ab");
  mfeed(&m, "cde");
  v = mvalue(&m);
  assert_non_null(strstr(v, "\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"));
  menv_end(&m);
}

/* ------------------------------------------------------------------------
 * A client that pipelines and never reads (issue 15, item 3), over TCP
 * ------------------------------------------------------------------------ */

#define NR_TIMEOUT_MS 400u
#define NR_WINDOW_MS 20000u /* a deadline, far past the expected drop */
#define NR_MAX_BYTES (64u << 20)

/* Samples the server's memory on the reactor's thread every 2 ms. */
typedef struct watch {
  env *e;
  braid_timer_t t;
  uint64_t out_max, in_max;
  uint64_t t_stall; /* the output first passed the high-water mark */
  uint64_t t_gone;  /* the connection was gone */
  int seen;
} watch;

static void watch_tick(braid_timer_t *t, void *arg) {
  (void)t;
  watch *w = arg;
  braid_http_server_stats st;
  braid_http_server_stats_get(w->e->srv, &st);
  uint64_t now = now_ms();
  if (st.output_queued_max > w->out_max)
    w->out_max = st.output_queued_max;
  if (st.input_buffered > w->in_max)
    w->in_max = st.input_buffered;
  if (st.connections > 0)
    w->seen = 1;
  if (w->t_stall == 0 && st.output_queued_max > 64u * 1024u)
    w->t_stall = now;
  if (w->seen && st.connections == 0 && w->t_gone == 0)
    w->t_gone = now;
  braid_timer_start(w->e->r, &w->t, BRAID_MSEC(2), watch_tick, w);
}

/* Sends `GET /nope` back to back until the server hangs up (or
 * NR_MAX_BYTES, or NR_WINDOW_MS) and never reads; records whether the
 * server hung up while it was still sending, and when. */
static void c_never_reads(env *e) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return;
  int rcv = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(e->port);
  a.sin_addr.s_addr = htonl(0x7f000001);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(fd);
    return;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  static const char req[] = "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n";
  char batch[64 * (sizeof req - 1)];
  for (size_t i = 0; i < 64; i++)
    memcpy(batch + i * (sizeof req - 1), req, sizeof req - 1);
  size_t off = 0;
  e->t0 = now_ms();
  int dropped = 0;
  while (now_ms() - e->t0 < NR_WINDOW_MS && e->sent < NR_MAX_BYTES) {
    ssize_t n = send(fd, batch + off, sizeof batch - off, MSG_NOSIGNAL);
    if (n > 0) {
      e->sent += (uint64_t)n;
      off = (off + (size_t)n) % sizeof batch;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      struct pollfd p = {fd, POLLOUT, 0};
      poll(&p, 1, 10);
      continue;
    }
    dropped = 1; /* ECONNRESET, EPIPE: the server hung up */
    break;
  }
  e->flags[0] = dropped;
  if (!dropped) {
    /* Still not reading: does the server hang up later? (events 0: only
     * an error or a hang-up ends the wait.) */
    struct pollfd p = {fd, 0, 0};
    e->flags[1] = poll(&p, 1, 3000) > 0;
  }
  e->t1 = now_ms();
  close(fd);
  sleep_ms(50); /* let the server see it, if it has not */
}

/* One run; returns whether the output's stall was seen by the 2 ms
 * sampler (on a busy host, or where the kernel takes the whole queue at
 * once as io_uring's sends may, the queue can pass the high-water mark
 * and drain below it between two samples: then the timing cannot be
 * judged and the caller runs again). Memory is checked on every run. */
static int never_reads_once(void) {
  env e;
  braid_http_server_options o = {0};
  o.write_timeout = BRAID_MSEC(NR_TIMEOUT_MS);
  o.no_access_log = true; /* tens of thousands of 404s */
  env_start(&e, &o);
  watch w;
  memset(&w, 0, sizeof w);
  w.e = &e;
  braid_timer_start(e.r, &w.t, 0, watch_tick, &w);
  env_run(&e, c_never_reads);
  braid_timer_cancel(&w.t);
  print_message("never-reads: sent %llu bytes, server output <= %llu, input "
                "<= %llu, dropped %d/%d after %llu ms (stall to drop %lld "
                "ms)\n",
                (unsigned long long)e.sent, (unsigned long long)w.out_max,
                (unsigned long long)w.in_max, e.flags[0], e.flags[1],
                (unsigned long long)(e.t1 - e.t0),
                (long long)(w.t_gone - w.t_stall));
  /* Memory: the transport's window plus one response (a 404 is a few
   * hundred bytes), one read buffer and its doubling; not what the
   * client sent. */
  assert_true(w.out_max <= 64u * 1024u + 4096u);
  assert_true(w.in_max <= 256u * 1024u);
  /* The server stopped reading, so TCP stopped the client. */
  assert_true(e.sent < NR_MAX_BYTES);
  /* Dropped while the client was still sending (arriving bytes restart
   * nothing). */
  assert_true(e.flags[0]);
  assert_true(w.t_gone > 0);
  if (w.t_stall == 0) {
    env_end(&e);
    return 0;
  }
  /* Not before write_timeout after the output stalled, and within 1.25 x
   * write_timeout of it (plus slack for a busy host, more under
   * valgrind). */
  uint64_t slack = getenv("BRAID_UNDER_VALGRIND") != NULL ? 3000 : 500;
  assert_true(w.t_gone + 10 >= w.t_stall + NR_TIMEOUT_MS);
  assert_true(w.t_gone <= w.t_stall + NR_TIMEOUT_MS * 5 / 4 + slack);
  env_end(&e);
  return 1;
}

static void t_never_reads(void **st) {
  (void)st;
  int judged = 0;
  for (int i = 0; i < 5 && !judged; i++)
    judged = never_reads_once();
  assert_true(judged); /* the stall was seen in one of five runs */
}

/* ------------------------------------------------------------------------
 * A download cut short is logged (issue 15, item 8), over TCP
 * ------------------------------------------------------------------------ */

#define CUT_BIG (8u * 1024u * 1024u)

typedef struct tcplog {
  char line[512];
  int n;
} tcplog;

static void tcplog_cb(void *arg, braid_log_level level, const char *domain,
                      const char *msg) {
  tcplog *l = arg;
  if (strcmp(domain, "access") == 0 && level == BRAID_LOG_INFO &&
      strstr(msg, "big8.bin") != NULL) {
    snprintf(l->line, sizeof l->line, "%s", msg);
    l->n++;
  }
}

static void c_cut(env *e) {
  cl c;
  if (cl_open(&c, e->port, 8192) < 0)
    return;
  cl_sends(&c, "GET /files/big8.bin HTTP/1.1\r\nHost: x\r\n\r\n");
  size_t got = 0;
  char b[8192];
  while (got < 100000) {
    ssize_t n = recv(c.fd, b, sizeof b, 0);
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  e->sent = got;
  /* Hang up with a reset, as a browser cancelling a download may. */
  struct linger lg = {1, 0};
  setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  cl_close(&c);
  /* Wait (bounded) for the server to notice. */
  for (int i = 0; i < 200 && braid_http_server_connections(e->srv) > 0; i++)
    sleep_ms(10);
}

static void t_cut_log(void **st) {
  (void)st;
  for (int sf = 0; sf < 2; sf++) {
    env e;
    braid_http_server_options o = {0};
    o.no_sendfile = sf == 1; /* both the sendfile and the read path */
    env_start(&e, &o);
    tcplog lg;
    memset(&lg, 0, sizeof lg);
    braid_reactor_set_log(e.r, tcplog_cb, &lg);
    char *big = big_data(CUT_BIG);
    write_file(e.dir, "big8.bin", big, CUT_BIG);
    free(big);
    env_run(&e, c_cut);
    /* The reactor stopped when the client finished: let the server see
     * the reset if it has not. */
    for (int i = 0; i < 100 && lg.n == 0; i++) {
      braid_reactor_run_once(e.r, false);
      sleep_ms(10);
    }
    print_message("cut (%s): client read %llu bytes; log: %s\n",
                  sf ? "read path" : "sendfile", (unsigned long long)e.sent,
                  lg.line);
    assert_true(e.sent >= 100000);
    assert_int_equal(lg.n, 1);
    const char *p = strstr(lg.line, "\"GET /files/big8.bin HTTP/1.1\" ");
    assert_non_null(p);
    int status = 0;
    unsigned long long bytes = 0;
    assert_int_equal(sscanf(strchr(p + 1, '"') + 1, "%d %llu", &status, &bytes),
                     2);
    assert_int_equal(status, 200);
    /* Cut short: less than the file. And not nothing: the client read
     * 100 KB of it, so the first 64 KiB piece was surely written. */
    assert_true(bytes < CUT_BIG);
    assert_true(bytes >= 65536);
    env_end(&e);
  }
}

/* ------------------------------------------------------------------------
 * Static files never leave the folder (issue 15, item 5), over TCP
 * ------------------------------------------------------------------------ */

static void c_contain(env *e) {
  static const char *const targets[] = {
      "/files/idx/",           /* index.html -> a file outside the root */
      "/files/idx/index.html", /* the same, by name */
      "/files/idx2/",          /* index.html -> a file inside the root */
      "/files/idx3/",          /* index.html -> a folder outside */
  };
  for (int i = 0; i < 4; i++) {
    cl c;
    if (cl_open(&c, e->port, 0) < 0)
      return;
    get(&c, targets[i], NULL, &e->res[i], 0);
    cl_close(&c);
  }
}

static void t_static_contain(void **st) {
  (void)st;
  env e;
  env_start(&e, NULL);
  char secret_dir[64] = "/tmp/braid-http-secret-XXXXXX";
  assert_non_null(mkdtemp(secret_dir));
  write_file(secret_dir, "index.html", "secret outside the root\n", 24);
  write_file(e.dir, "a.txt", "inside\n", 7);
  char p[256], target[256];
  static const char *const dirs[] = {"idx", "idx2", "idx3"};
  for (int i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s/%s", e.dir, dirs[i]);
    assert_int_equal(mkdir(p, 0755), 0);
  }
  snprintf(p, sizeof p, "%s/idx/index.html", e.dir);
  snprintf(target, sizeof target, "%s/index.html", secret_dir);
  assert_int_equal(symlink(target, p), 0);
  snprintf(p, sizeof p, "%s/idx2/index.html", e.dir);
  assert_int_equal(symlink("../a.txt", p), 0);
  snprintf(p, sizeof p, "%s/idx3/index.html", e.dir);
  assert_int_equal(symlink(secret_dir, p), 0);
  env_run(&e, c_contain);
  assert_int_equal(e.res[0].status, 403);
  assert_null(strstr(e.res[0].body ? e.res[0].body : "", "secret"));
  assert_int_equal(e.res[1].status, 403);
  assert_int_equal(e.res[2].status, 200);
  assert_string_equal(e.res[2].body, "inside\n");
  assert_int_equal(e.res[3].status, 403);
  assert_null(strstr(e.res[3].body ? e.res[3].body : "", "index.html"));
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", secret_dir);
  assert_int_equal(system(cmd), 0);
  env_end(&e);
}

/* ------------------------------------------------------------------------
 * The write timeout and the slow reader, deterministic (item 3)
 * ------------------------------------------------------------------------ */

static braid_transport_t *mtr(menv *m) {
  return braid_memory_transport_transport(m->mt);
}

static void t_mem_write_timeout(void **st) {
  (void)st;
  menv m;
  braid_http_server_options o = {0};
  o.write_timeout = BRAID_SEC(4);
  menv_start(&m, &o);
  braid_memory_transport_set_consumer_blocked(m.mt, true);
  mfeed(&m, "GET /stream?4000000 HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_int_equal(m.e.pauses, 1);
  /* The client pipelines on while it reads nothing: the server stops
   * reading (the bytes wait in the transport, as they would in the
   * kernel) and parses nothing. */
  for (int i = 0; i < 100; i++)
    mfeed(&m, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_true(braid_memory_transport_reading_paused(m.mt));
  assert_true(braid_memory_transport_pending_input(m.mt) > 0);
  braid_http_server_stats ss;
  braid_http_server_stats_get(m.e.srv, &ss);
  assert_int_equal(ss.connections, 1);
  assert_true(ss.output_queued <= 64u * 1024u + 16384u + 512u);
  /* Nothing accepted for 3.9 s: still there; at 4 s (checked every
   * second): dropped. */
  braid_clock_advance(m.e.r, BRAID_SEC(3));
  mfeed(&m, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  braid_clock_advance(m.e.r, BRAID_MSEC(900));
  assert_false(braid_memory_transport_disconnected(m.mt, NULL));
  braid_clock_advance(m.e.r, BRAID_MSEC(1100));
  assert_true(braid_memory_transport_aborted(m.mt));
  assert_int_equal(m.e.closed_calls, 1);
  /* One line: the stream, cut at 0 body bytes; no /hello was answered. */
  assert_int_equal(m.log.n, 1);
  assert_non_null(
      strstr(m.log.lines[0], "\"GET /stream?4000000 HTTP/1.1\" 200 0"));
  menv_end(&m);

  /* A slow reader is not a stalled one: it keeps the connection as long
   * as it takes bytes, and is dropped write_timeout after it stops. */
  menv_start(&m, &o);
  braid_memory_transport_set_consumer_blocked(m.mt, true);
  mfeed(&m, "GET /stream?4000000 HTTP/1.1\r\nHost: x\r\n\r\n");
  for (int i = 0; i < 10; i++) {
    braid_clock_advance(m.e.r, BRAID_SEC(3));
    assert_true(braid_memory_transport_drain(m.mt, 20000) > 0);
    braid_memory_transport_clear(m.mt);
  }
  assert_false(braid_memory_transport_disconnected(m.mt, NULL));
  assert_true(braid_transport_write_queued(mtr(&m)) > 0);
  braid_clock_advance(m.e.r, BRAID_MSEC(3900));
  assert_false(braid_memory_transport_disconnected(m.mt, NULL));
  braid_clock_advance(m.e.r, BRAID_MSEC(1200));
  assert_true(braid_memory_transport_aborted(m.mt));
  menv_end(&m);
}

/* ------------------------------------------------------------------------
 * The access log counts what was sent (item 8), deterministic
 * ------------------------------------------------------------------------ */

#define MEM_BIG (4u * 1024u * 1024u)

static void bigmem_h(braid_http_req_t *req, void *arg) {
  (void)arg;
  char *b = malloc(MEM_BIG);
  memset(b, 'z', MEM_BIG);
  braid_http_respond(req, 200, NULL, 0, b, MEM_BIG);
  free(b);
}

static unsigned long long log_bytes(const char *line, int *status) {
  const char *p = strstr(line, "HTTP/1.1\" ");
  unsigned long long b = 0;
  *status = 0;
  if (p == NULL || sscanf(p + 10, "%d %llu", status, &b) != 2)
    return ~0ull;
  return b;
}

static void t_mem_cut_log(void **st) {
  (void)st;
  for (int lose = 0; lose < 2; lose++) {
    menv m;
    menv_start(&m, NULL);
    assert_int_equal(braid_http_route(m.e.srv, "GET", "/big", bigmem_h, NULL),
                     0);
    braid_memory_transport_set_consumer_blocked(m.mt, true);
    mfeed(&m, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    /* The response is complete but not sent: no line yet. */
    assert_int_equal(m.log.n, 0);
    assert_int_equal(braid_memory_transport_drain(m.mt, 300000), 300000);
    size_t len;
    const char *v = braid_memory_transport_value(m.mt, &len);
    const char *end = memmem(v, len, "\r\n\r\n", 4);
    assert_non_null(end);
    unsigned long long body_read = 300000 - (unsigned long long)(end + 4 - v);
    int status;
    if (lose) {
      braid_memory_transport_lose(m.mt, BRAID_ECONNRESET);
      assert_int_equal(m.log.n, 1);
      unsigned long long b = log_bytes(m.log.lines[0], &status);
      print_message("cut at %llu body bytes: logged %llu\n", body_read, b);
      assert_int_equal(status, 200);
      /* Never more than sent; short by less than two 64 KiB pieces. */
      assert_true(b <= body_read);
      assert_true(b + 2 * 65536 >= body_read);
    } else {
      /* The client reads it all: logged in full, once. */
      while (braid_memory_transport_drain(m.mt, 1 << 20) > 0)
        braid_memory_transport_clear(m.mt);
      assert_int_equal(m.log.n, 1);
      assert_int_equal(log_bytes(m.log.lines[0], &status), MEM_BIG);
      assert_int_equal(status, 200);
      braid_memory_transport_lose(m.mt, BRAID_ECONNRESET);
      assert_int_equal(m.log.n, 1);
    }
    menv_end(&m);
  }
}

/* ------------------------------------------------------------------------
 * A trickled head costs linear time (item 9)
 * ------------------------------------------------------------------------ */

typedef struct probe {
  uint64_t work;
  size_t calls;
} probe;

/* How many bytes the parser is asked to look at again: all of them when
 * it has no resume state, else those from where it stopped (in the start
 * line, the first new byte; in the header section, the start of the
 * unfinished line). See braid/http_parser.h. */
static void probe_cb(const char *buf, size_t len,
                     const braid_http_request_t *state, void *arg) {
  (void)buf;
  probe *p = arg;
  size_t from = 0;
  if (state->hint_.phase_ != 0 && state->hint_.pos_ <= len)
    from = state->hint_.pos_;
  p->work += len - from;
  p->calls++;
}

static void t_mem_trickle(void **st) {
  (void)st;
  /* A 14 KB head: a long target and 90 header lines. */
  static char head[16384];
  size_t n = (size_t)snprintf(head, sizeof head, "GET /hello?");
  memset(head + n, 'a', 8000);
  n += 8000;
  n += (size_t)snprintf(head + n, sizeof head - n, " HTTP/1.1\r\nHost: x\r\n");
  uint64_t sq = 0; /* sum of the squared header line lengths */
  for (int i = 0; i < 90; i++) {
    size_t l =
        (size_t)snprintf(head + n, sizeof head - n, "X-%03d: %060d\r\n", i, i);
    n += l;
    sq += (uint64_t)l * l;
  }
  n += (size_t)snprintf(head + n, sizeof head - n, "\r\n");
  menv m;
  menv_start(&m, NULL);
  probe pb = {0, 0};
  braid__http_server_set_parse_probe(m.e.srv, probe_cb, &pb);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(braid_memory_transport_feed(m.mt, head + i, 1), 0);
  assert_non_null(strstr(mvalue(&m), "HTTP/1.1 200 OK\r\n"));
  assert_non_null(strstr(mvalue(&m), "hello, world\n"));
  print_message("trickle: %zu bytes, %zu parses, %llu bytes looked at\n", n,
                pb.calls, (unsigned long long)pb.work);
  assert_int_equal(pb.calls, n);
  /* Linear in the head (each unfinished line is judged again as it grows,
   * so its square counts); from the start every time would be n^2/2,
   * about 100 million here. */
  assert_true(pb.work <= 2 * (uint64_t)n + sq);
  /* The next head on the same connection starts afresh. */
  pb.work = 0;
  braid_memory_transport_clear(m.mt);
  mfeed(&m, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  assert_non_null(strstr(mvalue(&m), "HTTP/1.1 200 OK\r\n"));
  menv_end(&m);
}

/* ------------------------------------------------------------------------
 * Redirects and hidden names (items 5 and 6), deterministic
 * ------------------------------------------------------------------------ */

typedef struct sroot {
  char dir[64];
  braid_http_static_t *st;
} sroot;

static void sroot_make(sroot *s, const braid_http_static_options *o) {
  snprintf(s->dir, sizeof s->dir, "/tmp/braid-http-root-XXXXXX");
  assert_non_null(mkdtemp(s->dir));
  static const char *const dirs[] = {"sub", "a b", ".git", "sub/.hidden"};
  char p[256];
  for (int i = 0; i < 4; i++) {
    snprintf(p, sizeof p, "%s/%s", s->dir, dirs[i]);
    assert_int_equal(mkdir(p, 0755), 0);
  }
  write_file(s->dir, ".git/config", "[core]\n", 7);
  write_file(s->dir, ".env", "KEY=secret\n", 11);
  write_file(s->dir, "sub/.profile", "p\n", 2);
  write_file(s->dir, "sub/.hidden/x.txt", "x\n", 2);
  write_file(s->dir, "visible.txt", "v\n", 2);
  assert_int_equal(braid_http_static_create(s->dir, o, &s->st), 0);
}

static void sroot_free(sroot *s) {
  braid_http_static_destroy(s->st);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
  assert_int_equal(system(cmd), 0);
}

/* One request on the memory transport; the answer as a string. */
static const char *mget(menv *m, const char *target) {
  char req[512];
  snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", target);
  braid_memory_transport_clear(m->mt);
  mfeed(m, req);
  return mvalue(m);
}

static void t_mem_redirects(void **st) {
  (void)st;
  static const struct {
    const char *target, *location;
  } cases[] = {
      {"/sub", "/sub/"},
      {"//sub", "/sub/"}, /* not //sub/: another host */
      {"///sub", "/sub/"},
      {"/%2Fsub", "/sub/"},         /* decoded, it is //sub */
      {"http://evil/sub", "/sub/"}, /* absolute form: not evil's */
      {"http://evil//sub?x=1", "/sub/?x=1"},
      {"/sub?q=%2F%2Fe", "/sub/?q=%2F%2Fe"},
      {"/a%20b", "/a%20b/"},
  };
  sroot sr;
  sroot_make(&sr, NULL);
  menv m;
  menv_start(&m, NULL);
  assert_int_equal(
      braid_http_route(m.e.srv, NULL, "/", braid_http_static_handler, sr.st),
      0);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *v = mget(&m, cases[i].target);
    char want[128];
    snprintf(want, sizeof want, "\r\nLocation: %s\r\n", cases[i].location);
    if (strstr(v, want) == NULL)
      fail_msg("%s: want %s, got:\n%s", cases[i].target, want, v);
    assert_non_null(strstr(v, "HTTP/1.1 301 "));
  }
  menv_end(&m);
  sroot_free(&sr);
}

static void t_mem_dotfiles(void **st) {
  (void)st;
  static const char *const hidden[] = {
      "/.git/config",
      "/.git/",
      "/.env",
      "/sub/.profile",
      "/sub/.hidden/x.txt",
      "/%2egit/config",
      "/sub/%2Eprofile",
  };
  for (int allow = 0; allow < 2; allow++) {
    braid_http_static_options so = {0};
    so.dotfiles = allow == 1;
    sroot sr;
    sroot_make(&sr, &so);
    menv m;
    menv_start(&m, NULL);
    assert_int_equal(
        braid_http_route(m.e.srv, NULL, "/", braid_http_static_handler, sr.st),
        0);
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++) {
      const char *v = mget(&m, hidden[i]);
      const char *want = allow ? "HTTP/1.1 200 " : "HTTP/1.1 404 ";
      if (strncmp(v, want, strlen(want)) != 0)
        fail_msg("%s (dotfiles %d): %.40s", hidden[i], allow, v);
    }
    assert_non_null(strstr(mget(&m, "/visible.txt"), "HTTP/1.1 200 "));
    /* Listings leave them out, unless published. */
    const char *v = mget(&m, "/");
    assert_non_null(strstr(v, "visible.txt"));
    assert_true((strstr(v, ".git") != NULL) == allow);
    assert_true((strstr(v, ".env") != NULL) == allow);
    v = mget(&m, "/sub/");
    assert_true((strstr(v, ".profile") != NULL) == allow);
    assert_true((strstr(v, ".hidden") != NULL) == allow);
    menv_end(&m);
    sroot_free(&sr);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_helpers),
      cmocka_unit_test(t_keepalive),
      cmocka_unit_test(t_pipeline),
      cmocka_unit_test(t_versions),
      cmocka_unit_test(t_errors),
      cmocka_unit_test(t_limits),
      cmocka_unit_test(t_bodies),
      cmocka_unit_test(t_bytewise),
      cmocka_unit_test(t_timeouts),
      cmocka_unit_test(t_flow_control),
      cmocka_unit_test(t_static),
      cmocka_unit_test(t_traversal_listing),
      cmocka_unit_test(t_routes),
      cmocka_unit_test(t_mem_pipeline_log),
      cmocka_unit_test(t_mem_timeouts),
      cmocka_unit_test(t_mem_flow),
      cmocka_unit_test(t_mem_continue),
      cmocka_unit_test(t_never_reads),
      cmocka_unit_test(t_cut_log),
      cmocka_unit_test(t_static_contain),
      cmocka_unit_test(t_mem_write_timeout),
      cmocka_unit_test(t_mem_cut_log),
      cmocka_unit_test(t_mem_trickle),
      cmocka_unit_test(t_mem_redirects),
      cmocka_unit_test(t_mem_dotfiles),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
