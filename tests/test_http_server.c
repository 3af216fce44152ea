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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_helpers),      cmocka_unit_test(t_keepalive),
      cmocka_unit_test(t_pipeline),     cmocka_unit_test(t_versions),
      cmocka_unit_test(t_errors),       cmocka_unit_test(t_limits),
      cmocka_unit_test(t_bodies),       cmocka_unit_test(t_bytewise),
      cmocka_unit_test(t_timeouts),     cmocka_unit_test(t_flow_control),
      cmocka_unit_test(t_static),       cmocka_unit_test(t_traversal_listing),
      cmocka_unit_test(t_routes),       cmocka_unit_test(t_mem_pipeline_log),
      cmocka_unit_test(t_mem_timeouts), cmocka_unit_test(t_mem_flow),
      cmocka_unit_test(t_mem_continue),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
