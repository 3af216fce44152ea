/* The HTTP/1.1 client (braid/http_client.h).
 *
 * Most tests drive the client over memory transports handed out by a test
 * connector, on the manual clock: the test plays the server byte by byte.
 * Then a few over real loopback sockets: a refused connect, and interop
 * with servers braid did not write, started by the test on 127.0.0.1 and
 * stopped by PID: Python's http.server and nginx (skipped, with a message,
 * when the binary is missing). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "braid/braid.h"
#include "braid/testing.h"

#define MS UINT64_C(1000000)
#define SEC UINT64_C(1000000000)

/* ------------------------------------------------------------------------
 * Test harness: a connector that makes memory transports
 * ------------------------------------------------------------------------ */

#define MAX_MT 16

typedef struct fx {
  braid_reactor_t *r;
  braid_http_client_t *c;
  braid_memory_transport_t *mt[MAX_MT];
  size_t nmt;
  int refuse;                /* connector returns this at once */
  int refuse_later;          /* connection_lost(this) without made */
  braid_protocol_t *pending; /* for refuse_later */
  char last_host[64];
  uint16_t last_port;
  uint64_t last_timeout;
} fx;

static int mem_connect(braid_reactor_t *r, const char *host, uint16_t port,
                       uint64_t timeout, braid_protocol_t *p, void *arg) {
  fx *f = arg;
  f->last_timeout = timeout;
  snprintf(f->last_host, sizeof f->last_host, "%s", host);
  f->last_port = port;
  if (f->refuse)
    return f->refuse;
  if (f->refuse_later) {
    f->pending = p;
    return 0;
  }
  assert_true(f->nmt < MAX_MT);
  return braid_memory_transport_create(r, p, &f->mt[f->nmt++]);
}

static void fx_init(fx *f, const braid_http_client_options *o) {
  memset(f, 0, sizeof *f);
  assert_int_equal(braid_testing_reactor_create(&f->r), 0);
  braid_http_client_options opts = {0};
  if (o != NULL)
    opts = *o;
  opts.connect = mem_connect;
  opts.connect_arg = f;
  opts.user_agent = "";
  assert_int_equal(braid_http_client_create(f->r, &opts, &f->c), 0);
}

static void fx_done(fx *f) {
  if (f->c != NULL)
    braid_http_client_destroy(f->c);
  braid_clock_advance(f->r, 0);
  assert_int_equal(braid_reactor_destroy(f->r), 0);
  for (size_t i = 0; i < f->nmt; i++)
    braid_memory_transport_destroy(f->mt[i]);
}

/* What a request's deferred produced. */
typedef struct outcome {
  int fired;
  int code; /* 0: success */
  braid_http_client_response_t *resp;
} outcome;

static void oc_ok(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  outcome *o = arg;
  o->fired++;
  o->code = 0;
  o->resp = braid_result_take(res, NULL);
}

static void oc_err(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  outcome *o = arg;
  o->fired++;
  o->code = braid_failure_code(braid_result_failure(res));
  braid_result_set(res, NULL, NULL);
}

static void oc_watch(braid_deferred_t d, outcome *o) {
  memset(o, 0, sizeof *o);
  assert_int_equal(braid_deferred_add_callbacks(d, oc_ok, o, oc_err, o), 0);
}

static void oc_clear(outcome *o) {
  braid_http_client_response_free(o->resp);
  o->resp = NULL;
}

static braid_deferred_t get(fx *f, const char *url, outcome *o) {
  braid_deferred_t d;
  assert_int_equal(braid_http_request(f->c, "GET", url, NULL, 0, NULL, 0, &d),
                   0);
  oc_watch(d, o);
  return d;
}

static void feed(braid_memory_transport_t *mt, const char *s) {
  assert_int_equal(braid_memory_transport_feed(mt, s, strlen(s)), 0);
}

/* What the client wrote, as a NUL-terminated copy (the value buffer is
 * not terminated). */
static const char *sent(braid_memory_transport_t *mt) {
  static char copy[8192];
  size_t n;
  const char *v = braid_memory_transport_value(mt, &n);
  assert_true(n < sizeof copy);
  memcpy(copy, v, n);
  copy[n] = '\0';
  return copy;
}

/* ------------------------------------------------------------------------
 * URLs
 * ------------------------------------------------------------------------ */

static void t_url(void **st) {
  (void)st;
  braid_http_url_t u;
  assert_int_equal(braid_http_url_parse(&u, "http://Example.ORG/a/b?x=1#frag"),
                   0);
  assert_string_equal(u.host, "example.org");
  assert_int_equal(u.port, 80);
  assert_int_equal(u.path_len, 8);
  assert_memory_equal(u.path, "/a/b?x=1", 8);
  assert_false(u.https);
  assert_int_equal(braid_http_url_parse(&u, "http://127.0.0.1:8080"), 0);
  assert_int_equal(u.port, 8080);
  assert_int_equal(u.path_len, 0);
  assert_int_equal(braid_http_url_parse(&u, "http://[::1]:81/x"), 0);
  assert_string_equal(u.host, "::1");
  assert_true(u.ipv6);
  assert_int_equal(u.port, 81);
  assert_int_equal(braid_http_url_parse(&u, "http://h?q"), 0);
  assert_memory_equal(u.path, "?q", 2);
  assert_int_equal(braid_http_url_parse(&u, "https://h/"), 0);
  assert_true(u.https);
  assert_int_equal(u.port, 443);
  assert_int_equal(braid_http_url_parse(&u, "http://h:/"), 0);
  assert_int_equal(u.port, 80);
  const char *bad[] = {"ftp://h/",     "http://",         "http:///x",
                       "http://h:0/",  "http://h:65536/", "http://h:8x/",
                       "http://u@h/",  "http://[::1/",    "http://[::1]x/",
                       "http://h/a b", "http://[zz]/",    "h/x",
                       "http://a b/"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_not_equal(braid_http_url_parse(&u, bad[i]), 0);
  char big[400] = "http://";
  memset(big + 7, 'a', 300);
  assert_int_equal(braid_http_url_parse(&u, big), BRAID_ENAMETOOLONG);
}

static void t_bad_args(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  braid_deferred_t d;
  assert_int_equal(
      braid_http_request(f.c, "GET", "gopher://h/", NULL, 0, NULL, 0, &d),
      BRAID_EINVAL);
  assert_int_equal(
      braid_http_request(f.c, "G T", "http://h/", NULL, 0, NULL, 0, &d),
      BRAID_EINVAL);
  braid_http_header_t inj = {{"X-A", 3}, {"a\r\nB: c", 7}};
  assert_int_equal(
      braid_http_request(f.c, "GET", "http://h/", &inj, 1, NULL, 0, &d),
      BRAID_EINVAL);
  braid_http_header_t host = {{"host", 4}, {"x", 1}};
  assert_int_equal(
      braid_http_request(f.c, "GET", "http://h/", &host, 1, NULL, 0, &d),
      BRAID_EINVAL);
  assert_int_equal(f.nmt, 0);
  fx_done(&f);
}

/* ------------------------------------------------------------------------
 * Basic exchange and keep-alive reuse
 * ------------------------------------------------------------------------ */

static void t_get_and_reuse(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  outcome o;
  braid_http_header_t h = {{"Accept", 6}, {"*/*", 3}};
  braid_deferred_t d;
  assert_int_equal(braid_http_request(f.c, "GET",
                                      "http://Example.org:8080/p?q=1#x", &h, 1,
                                      NULL, 0, &d),
                   0);
  oc_watch(d, &o);
  assert_int_equal(f.nmt, 1);
  assert_string_equal(f.last_host, "example.org");
  assert_int_equal(f.last_port, 8080);
  assert_true(f.last_timeout == 30 * SEC); /* the default connect timeout */
  assert_string_equal(sent(f.mt[0]), "GET /p?q=1 HTTP/1.1\r\n"
                                     "Host: example.org:8080\r\n"
                                     "Accept: */*\r\n\r\n");
  assert_int_equal(o.fired, 0);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhel");
  assert_int_equal(o.fired, 0);
  feed(f.mt[0], "lo");
  assert_int_equal(o.fired, 1);
  assert_int_equal(o.code, 0);
  assert_int_equal(o.resp->status, 200);
  assert_int_equal(o.resp->minor_version, 1);
  assert_int_equal(o.resp->reason.len, 2);
  assert_memory_equal(o.resp->reason.ptr, "OK", 2);
  assert_int_equal(o.resp->body_len, 5);
  assert_string_equal(o.resp->body, "hello");
  assert_false(o.resp->reused_connection);
  const braid_http_view_t *v = braid_http_client_response_header(o.resp, "x-y");
  assert_non_null(v);
  assert_memory_equal(v->ptr, "z", 1);
  assert_null(braid_http_client_response_header(o.resp, "nope"));
  oc_clear(&o);
  assert_int_equal(braid_http_client_idle_connections(f.c), 1);

  /* The second request goes over the same connection. */
  braid_memory_transport_clear(f.mt[0]);
  get(&f, "http://example.org:8080/two", &o);
  assert_int_equal(f.nmt, 1);
  assert_int_equal(braid_http_client_idle_connections(f.c), 0);
  assert_string_equal(sent(f.mt[0]), "GET /two HTTP/1.1\r\n"
                                     "Host: example.org:8080\r\n\r\n");
  feed(f.mt[0], "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  assert_int_equal(o.code, 0);
  assert_int_equal(o.resp->status, 404);
  assert_int_equal(o.resp->body_len, 0);
  assert_string_equal(o.resp->body, ""); /* never NULL when buffered */
  assert_true(o.resp->reused_connection);
  oc_clear(&o);

  /* Another port is another pool. */
  get(&f, "http://example.org/", &o);
  assert_int_equal(f.nmt, 2);
  assert_string_equal(sent(f.mt[1]),
                      "GET / HTTP/1.1\r\nHost: example.org\r\n\r\n");
  feed(f.mt[1], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  oc_clear(&o);
  assert_int_equal(braid_http_client_open_connections(f.c), 2);
  fx_done(&f);
}

static void t_post_body(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  outcome o;
  braid_deferred_t d;
  assert_int_equal(
      braid_http_request(f.c, "POST", "http://[::1]/f", NULL, 0, "abc", 3, &d),
      0);
  oc_watch(d, &o);
  assert_string_equal(f.last_host, "::1");
  assert_string_equal(sent(f.mt[0]), "POST /f HTTP/1.1\r\nHost: [::1]\r\n"
                                     "Content-Length: 3\r\n\r\nabc");
  feed(f.mt[0], "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
  assert_int_equal(o.resp->status, 201);
  oc_clear(&o);
  /* POST without a body says Content-Length: 0. */
  braid_memory_transport_clear(f.mt[0]);
  assert_int_equal(
      braid_http_request(f.c, "POST", "http://[::1]/f", NULL, 0, NULL, 0, &d),
      0);
  oc_watch(d, &o);
  assert_string_equal(sent(f.mt[0]), "POST /f HTTP/1.1\r\nHost: [::1]\r\n"
                                     "Content-Length: 0\r\n\r\n");
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  oc_clear(&o);
  fx_done(&f);
}

/* ------------------------------------------------------------------------
 * Framing
 * ------------------------------------------------------------------------ */

static const char chunked_resp[] =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n";

/* Every split of a response in two, and byte by byte: same result. */
static void run_split(const char *resp, size_t split, bool bytewise,
                      const char *want_body, int want_status, bool want_idle) {
  fx f;
  fx_init(&f, NULL);
  outcome o;
  get(&f, "http://h/", &o);
  size_t n = strlen(resp);
  if (bytewise) {
    for (size_t i = 0; i < n; i++)
      assert_int_equal(braid_memory_transport_feed(f.mt[0], resp + i, 1), 0);
  } else {
    assert_int_equal(braid_memory_transport_feed(f.mt[0], resp, split), 0);
    if (split < n)
      assert_int_equal(
          braid_memory_transport_feed(f.mt[0], resp + split, n - split), 0);
  }
  assert_int_equal(o.fired, 1);
  assert_int_equal(o.code, 0);
  assert_int_equal(o.resp->status, want_status);
  assert_int_equal(o.resp->body_len, strlen(want_body));
  assert_memory_equal(o.resp->body, want_body, strlen(want_body));
  assert_int_equal(braid_http_client_idle_connections(f.c), want_idle ? 1 : 0);
  oc_clear(&o);
  fx_done(&f);
}

static void t_chunked_split(void **st) {
  (void)st;
  size_t n = strlen(chunked_resp);
  for (size_t i = 1; i <= n; i++)
    run_split(chunked_resp, i, false, "hello world!", 200, true);
  run_split(chunked_resp, 0, true, "hello world!", 200, true);
  const char *cl = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
  for (size_t i = 1; i <= strlen(cl); i++)
    run_split(cl, i, false, "0123456789", 200, true);
  run_split(cl, 0, true, "0123456789", 200, true);
  /* Interim responses are skipped, wherever the split falls. */
  const char *interim = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early "
                        "Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 200 OK\r\n"
                        "Content-Length: 2\r\n\r\nok";
  for (size_t i = 1; i <= strlen(interim); i++)
    run_split(interim, i, false, "ok", 200, true);
}

static void t_no_body_responses(void **st) {
  (void)st;
  /* 204 and 304 have no body whatever they say; the connection stays. */
  run_split("HTTP/1.1 204 No Content\r\n\r\n", 5, false, "", 204, true);
  run_split("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 5, false,
            "", 304, true);
  /* HEAD: Content-Length describes the GET body, none follows. */
  fx f;
  fx_init(&f, NULL);
  outcome o;
  braid_deferred_t d;
  assert_int_equal(
      braid_http_request(f.c, "HEAD", "http://h/", NULL, 0, NULL, 0, &d), 0);
  oc_watch(d, &o);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
  assert_int_equal(o.code, 0);
  assert_int_equal(o.resp->body_len, 0);
  oc_clear(&o);
  assert_int_equal(braid_http_client_idle_connections(f.c), 1);
  fx_done(&f);
}

static void t_close_delimited(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  outcome o;
  get(&f, "http://h/", &o);
  feed(f.mt[0], "HTTP/1.0 200 OK\r\n\r\nsome ");
  feed(f.mt[0], "bytes");
  assert_int_equal(o.fired, 0);
  assert_int_equal(braid_memory_transport_feed_eof(f.mt[0]), 0);
  braid_clock_advance(f.r, 0);
  assert_int_equal(o.fired, 1);
  assert_int_equal(o.code, 0);
  assert_string_equal(o.resp->body, "some bytes");
  oc_clear(&o);
  assert_int_equal(braid_http_client_open_connections(f.c), 0);
  /* Cut by a reset instead: an error, not a short body. */
  get(&f, "http://h/", &o);
  feed(f.mt[1], "HTTP/1.1 200 OK\r\n\r\nsome ");
  braid_memory_transport_lose(f.mt[1], BRAID_ECONNRESET);
  assert_int_equal(o.code, BRAID_ECONNRESET);
  /* Content-Length body cut short by a clean close: EPROTO. */
  get(&f, "http://h/", &o);
  feed(f.mt[2], "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort");
  braid_memory_transport_lose(f.mt[2], 0);
  assert_int_equal(o.code, BRAID_EPROTO);
  fx_done(&f);
}

static void t_not_reused(void **st) {
  (void)st;
  const char *resps[] = {
      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
      "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
      /* more than was asked for: the connection cannot be trusted */
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n",
  };
  for (size_t i = 0; i < 3; i++) {
    fx f;
    fx_init(&f, NULL);
    outcome o;
    get(&f, "http://h/", &o);
    feed(f.mt[0], resps[i]);
    assert_int_equal(o.code, 0);
    assert_string_equal(o.resp->body, "x");
    oc_clear(&o);
    braid_clock_advance(f.r, 0);
    assert_int_equal(braid_http_client_open_connections(f.c), 0);
    assert_true(braid_memory_transport_disconnected(f.mt[0], NULL));
    /* HTTP/1.0 with keep-alive is reused. */
    fx_done(&f);
  }
  fx f;
  fx_init(&f, NULL);
  outcome o;
  get(&f, "http://h/", &o);
  feed(f.mt[0], "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                "Content-Length: 1\r\n\r\nx");
  oc_clear(&o);
  assert_int_equal(braid_http_client_idle_connections(f.c), 1);
  fx_done(&f);
}

static void t_bad_responses(void **st) {
  (void)st;
  const char *bad[] = {
      "HTTP/1.1 2000 OK\r\n\r\n",
      "HTTX/1.1 200 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: "
      "chunked\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
      "Connection: upgrade\r\n\r\n",
      "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fx f;
    fx_init(&f, NULL);
    outcome o;
    get(&f, "http://h/", &o);
    feed(f.mt[0], bad[i]);
    assert_int_equal(o.fired, 1);
    assert_int_equal(o.code, BRAID_EPROTO);
    braid_clock_advance(f.r, 0);
    assert_true(braid_memory_transport_aborted(f.mt[0]));
    assert_int_equal(braid_http_client_open_connections(f.c), 0);
    fx_done(&f);
  }
  /* Data nobody asked for on an idle connection: it is dropped. */
  fx f;
  fx_init(&f, NULL);
  outcome o;
  get(&f, "http://h/", &o);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  oc_clear(&o);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\n");
  braid_clock_advance(f.r, 0);
  assert_int_equal(braid_http_client_open_connections(f.c), 0);
  fx_done(&f);
}

static void t_limits(void **st) {
  (void)st;
  braid_http_client_options o = {0};
  o.limits.max_header_bytes = 64;
  o.max_body_size = 8;
  fx f;
  fx_init(&f, &o);
  outcome oc;
  get(&f, "http://h/", &oc);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nX-Long: ");
  for (int i = 0; i < 10 && oc.fired == 0; i++)
    feed(f.mt[0], "0123456789");
  assert_int_equal(oc.code, BRAID_ELIMIT);
  get(&f, "http://h/", &oc);
  feed(f.mt[1], "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n12345678");
  assert_int_equal(oc.fired, 0);
  feed(f.mt[1], "9");
  assert_int_equal(oc.code, BRAID_ELIMIT);
  get(&f, "http://h/", &oc);
  feed(f.mt[2], "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n12345678");
  assert_int_equal(oc.code, 0);
  oc_clear(&oc);
  fx_done(&f);
}

/* ------------------------------------------------------------------------
 * Pool: retry, cap and queue, idle timeout
 * ------------------------------------------------------------------------ */

static void t_retry_idempotent(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  outcome o;
  get(&f, "http://h/", &o);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  oc_clear(&o);
  /* The server closes the pooled connection just as we send. */
  get(&f, "http://h/again", &o);
  assert_int_equal(f.nmt, 1);
  braid_memory_transport_lose(f.mt[0], 0);
  assert_int_equal(o.fired, 0);
  assert_int_equal(f.nmt, 2); /* sent again on a new connection */
  assert_string_equal(sent(f.mt[1]), "GET /again HTTP/1.1\r\nHost: h\r\n\r\n");
  /* Only once: this one fails. */
  braid_memory_transport_lose(f.mt[1], 0);
  assert_int_equal(o.code, BRAID_EPROTO);
  assert_int_equal(f.nmt, 2);

  /* POST is not retried. */
  get(&f, "http://h/", &o);
  feed(f.mt[2], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  oc_clear(&o);
  braid_deferred_t d;
  assert_int_equal(
      braid_http_request(f.c, "POST", "http://h/", NULL, 0, "x", 1, &d), 0);
  oc_watch(d, &o);
  braid_memory_transport_lose(f.mt[2], 0);
  assert_int_equal(o.code, BRAID_EPROTO);
  assert_int_equal(f.nmt, 3);
  /* Nor a request the server began to answer. */
  get(&f, "http://h/", &o);
  feed(f.mt[3], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  oc_clear(&o);
  get(&f, "http://h/", &o);
  feed(f.mt[3], "HTTP/1.1 2");
  braid_memory_transport_lose(f.mt[3], 0);
  assert_int_equal(o.code, BRAID_EPROTO);
  assert_int_equal(f.nmt, 4);
  fx_done(&f);
}

static void t_cap_and_queue(void **st) {
  (void)st;
  braid_http_client_options opts = {0};
  opts.max_per_host = 2;
  fx f;
  fx_init(&f, &opts);
  outcome o[4];
  for (int i = 0; i < 4; i++)
    get(&f, "http://h/", &o[i]);
  assert_int_equal(f.nmt, 2);
  assert_int_equal(braid_http_client_open_connections(f.c), 2);
  /* The first response frees a connection for the third request. */
  braid_memory_transport_clear(f.mt[0]);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na");
  assert_int_equal(o[0].code, 0);
  assert_string_equal(sent(f.mt[0]), "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
  /* A lost connection frees a slot for the fourth: a new connection. */
  braid_memory_transport_lose(f.mt[1], BRAID_ECONNRESET);
  assert_int_equal(o[1].code, BRAID_ECONNRESET);
  assert_int_equal(f.nmt, 3);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc");
  feed(f.mt[2], "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nd");
  assert_string_equal(o[2].resp->body, "c");
  assert_string_equal(o[3].resp->body, "d");
  for (int i = 0; i < 4; i++)
    oc_clear(&o[i]);
  assert_int_equal(braid_http_client_idle_connections(f.c), 2);
  fx_done(&f);
}

static void t_timeouts(void **st) {
  (void)st;
  braid_http_client_options opts = {0};
  opts.response_timeout = 5 * SEC;
  opts.idle_timeout = 2 * SEC;
  opts.connect_timeout = 3 * SEC;
  fx f;
  fx_init(&f, &opts);
  outcome o;
  get(&f, "http://h/", &o);
  /* the connect timeout is the connector's to enforce (braid_connect) */
  assert_true(f.last_timeout == 3 * SEC);
  braid_clock_advance(f.r, 4 * SEC);
  assert_int_equal(o.fired, 0);
  braid_clock_advance(f.r, 1 * SEC);
  assert_int_equal(o.code, BRAID_ETIMEDOUT);
  braid_clock_advance(f.r, 0);
  assert_true(braid_memory_transport_aborted(f.mt[0]));
  /* A body that stalls: body_timeout (default 60 s) of silence. */
  get(&f, "http://h/", &o);
  feed(f.mt[1], "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab");
  braid_clock_advance(f.r, 59 * SEC);
  feed(f.mt[1], "c"); /* progress restarts the clock */
  braid_clock_advance(f.r, 59 * SEC);
  assert_int_equal(o.fired, 0);
  braid_clock_advance(f.r, SEC);
  assert_int_equal(o.code, BRAID_ETIMEDOUT);
  /* An idle connection is closed after idle_timeout. */
  get(&f, "http://h/", &o);
  feed(f.mt[2], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  oc_clear(&o);
  /* the head arrived: no response timeout any more */
  braid_clock_advance(f.r, SEC);
  assert_int_equal(braid_http_client_idle_connections(f.c), 1);
  braid_clock_advance(f.r, SEC);
  braid_clock_advance(f.r, 1);
  assert_int_equal(braid_http_client_open_connections(f.c), 0);
  assert_true(braid_memory_transport_disconnected(f.mt[2], NULL));
  fx_done(&f);
}

/* ------------------------------------------------------------------------
 * Errors, cancellation, teardown
 * ------------------------------------------------------------------------ */

static void t_connect_errors(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  outcome o;
  f.refuse = BRAID_ECONNREFUSED;
  get(&f, "http://h/", &o);
  assert_int_equal(o.code, BRAID_ECONNREFUSED);
  f.refuse = 0;
  f.refuse_later = 1;
  get(&f, "http://h/", &o);
  assert_int_equal(o.fired, 0);
  f.pending->ops->connection_lost(f.pending, BRAID_ETIMEDOUT);
  assert_int_equal(o.code, BRAID_ETIMEDOUT);
  assert_int_equal(braid_http_client_open_connections(f.c), 0);
  /* A call handle is not handed out for a request that already failed. */
  f.refuse = BRAID_ECONNREFUSED;
  braid_http_request_options ro = {0};
  ro.url = "http://h/";
  braid_deferred_t d;
  braid_http_call_t *call = (braid_http_call_t *)&o;
  assert_int_equal(braid_http_request_ex(f.c, &ro, &d, &call), 0);
  assert_null(call);
  oc_watch(d, &o);
  assert_int_equal(o.code, BRAID_ECONNREFUSED);
  fx_done(&f);
}

static void t_cancel(void **st) {
  (void)st;
  braid_http_client_options opts = {0};
  opts.max_per_host = 1;
  fx f;
  fx_init(&f, &opts);
  outcome o1, o2;
  braid_deferred_t d1 = get(&f, "http://h/1", &o1);
  braid_deferred_t d2 = get(&f, "http://h/2", &o2);
  assert_int_equal(f.nmt, 1);
  /* A queued request is just removed. */
  braid_deferred_cancel(d2);
  assert_int_equal(o2.code, BRAID_ECANCELED);
  /* A request on a connection aborts the connection. */
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
  braid_deferred_cancel(d1);
  assert_int_equal(o1.code, BRAID_ECANCELED);
  braid_clock_advance(f.r, 0);
  assert_true(braid_memory_transport_aborted(f.mt[0]));
  assert_int_equal(braid_http_client_open_connections(f.c), 0);
  /* Cancelled while connecting: the connection is aborted when it comes
   * up. */
  f.refuse_later = 1;
  braid_deferred_t d3 = get(&f, "http://h/3", &o1);
  braid_deferred_cancel(d3);
  assert_int_equal(o1.code, BRAID_ECANCELED);
  assert_int_equal(braid_http_client_open_connections(f.c), 1);
  f.pending->ops->connection_lost(f.pending, BRAID_ECONNREFUSED);
  assert_int_equal(braid_http_client_open_connections(f.c), 0);
  fx_done(&f);
}

static void t_reactor_destroy_in_flight(void **st) {
  (void)st;
  braid_http_client_options opts = {0};
  opts.max_per_host = 1;
  fx f;
  fx_init(&f, &opts);
  outcome o1, o2, o3;
  get(&f, "http://h/", &o1);
  get(&f, "http://h/", &o2); /* queued */
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
  f.refuse_later = 1;
  get(&f, "http://other/", &o3); /* still connecting */
  /* No client destroy: the reactor's teardown frees the client. */
  assert_int_equal(braid_reactor_destroy(f.r), 0);
  assert_int_equal(o1.fired, 1);
  assert_int_not_equal(o1.code, 0);
  assert_int_equal(o2.code, BRAID_ECANCELED);
  /* teardown cancelled the deferred of the request still connecting */
  assert_int_equal(o3.code, BRAID_ECANCELED);
  /* Its connector reports late, as a resolver cancelled by teardown does;
   * the client is freed with that last connection (ASan/valgrind check). */
  f.pending->ops->connection_lost(f.pending, BRAID_ECANCELED);
  for (size_t i = 0; i < f.nmt; i++)
    braid_memory_transport_destroy(f.mt[i]);
}

/* An errback that destroys the client, run from deep inside it. */
static braid_http_client_t *destroy_me;

static void eb_destroy(braid_deferred_t d, braid_result_t *res, void *arg) {
  oc_err(d, res, arg);
  braid_http_client_destroy(destroy_me);
  destroy_me = NULL;
}

static void t_destroy_from_callback(void **st) {
  (void)st;
  braid_http_client_options opts = {0};
  opts.max_per_host = 1;
  fx f;
  fx_init(&f, &opts);
  outcome o1, o2, o3;
  get(&f, "http://h/", &o1);
  braid_deferred_t d;
  assert_int_equal(
      braid_http_request(f.c, "GET", "http://h/", NULL, 0, NULL, 0, &d), 0);
  memset(&o2, 0, sizeof o2);
  braid_deferred_add_callbacks(d, oc_ok, &o2, eb_destroy, &o2);
  get(&f, "http://h/", &o3); /* queued behind o2 */
  destroy_me = f.c;
  f.c = NULL;
  /* The connection drops; the queued call gets the slot, its connect
   * fails at once, and its errback destroys the client mid-kick. */
  f.refuse = BRAID_ECONNREFUSED;
  braid_memory_transport_lose(f.mt[0], BRAID_ECONNRESET);
  assert_int_equal(o1.code, BRAID_ECONNRESET);
  assert_int_equal(o2.code, BRAID_ECONNREFUSED);
  assert_int_equal(o3.code, BRAID_ECANCELED);
  assert_null(destroy_me);
  fx_done(&f);
}

static void t_client_destroy_in_flight(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  outcome o1, o2;
  get(&f, "http://h/", &o1);
  get(&f, "http://h/", &o2);
  feed(f.mt[1], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  oc_clear(&o2);
  braid_http_client_destroy(f.c);
  f.c = NULL;
  assert_int_equal(o1.code, BRAID_ECANCELED);
  braid_clock_advance(f.r, 0);
  assert_true(braid_memory_transport_aborted(f.mt[0]));
  assert_true(braid_memory_transport_aborted(f.mt[1]));
  fx_done(&f);
}

/* ------------------------------------------------------------------------
 * Streaming
 * ------------------------------------------------------------------------ */

typedef struct sink {
  char buf[256];
  size_t len;
  int ended;
  int status;
  bool pause_at_first;
  bool abort_at_first;
  braid_http_call_t *call;
} sink;

static void sk_data(braid_http_call_t *call, const void *data, size_t len,
                    void *user) {
  sink *s = user;
  assert_true(s->len + len < sizeof s->buf);
  memcpy(s->buf + s->len, data, len);
  s->len += len;
  if (s->pause_at_first) {
    s->pause_at_first = false;
    assert_int_equal(braid_http_call_pause(call), 0);
  }
  if (s->abort_at_first) {
    s->abort_at_first = false;
    braid_http_call_abort(call);
  }
}

static void sk_end(braid_http_call_t *call, int status, void *user) {
  (void)call;
  sink *s = user;
  s->ended++;
  s->status = status;
}

static void t_stream_response(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  sink s = {0};
  s.pause_at_first = true;
  braid_http_body_handlers h = {
      .body_data = sk_data, .body_end = sk_end, .user = &s};
  braid_http_request_options ro = {0};
  ro.url = "http://h/";
  ro.handlers = &h;
  braid_deferred_t d;
  braid_http_call_t *call;
  assert_int_equal(braid_http_request_ex(f.c, &ro, &d, &call), 0);
  assert_non_null(call);
  outcome o;
  oc_watch(d, &o);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab");
  /* The deferred fires with the head alone. */
  assert_int_equal(o.code, 0);
  assert_null(o.resp->body);
  assert_int_equal(o.resp->status, 200);
  assert_int_equal(s.len, 2);
  /* Paused by the sink: the transport holds further bytes. */
  assert_true(braid_memory_transport_reading_paused(f.mt[0]));
  feed(f.mt[0], "c\r\n0\r\n\r\n");
  assert_int_equal(s.len, 2);
  assert_int_equal(braid_http_call_resume(call), 0);
  braid_clock_advance(f.r, 0);
  assert_int_equal(s.ended, 1);
  assert_int_equal(s.status, 0);
  assert_memory_equal(s.buf, "abc", 3);
  oc_clear(&o);
  assert_int_equal(braid_http_client_idle_connections(f.c), 1);

  /* Aborting from inside body_data. */
  sink s2 = {0};
  s2.abort_at_first = true;
  braid_http_body_handlers h2 = {
      .body_data = sk_data, .body_end = sk_end, .user = &s2};
  ro.handlers = &h2;
  assert_int_equal(braid_http_request_ex(f.c, &ro, &d, &call), 0);
  oc_watch(d, &o);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
  assert_int_equal(s2.ended, 1);
  assert_int_equal(s2.status, BRAID_ECANCELED);
  oc_clear(&o);
  braid_clock_advance(f.r, 0);
  assert_true(braid_memory_transport_aborted(f.mt[0]));

  /* A streamed body cut by the connection: body_end gets the reason. */
  sink s3 = {0};
  braid_http_body_handlers h3 = {
      .body_data = sk_data, .body_end = sk_end, .user = &s3};
  ro.handlers = &h3;
  assert_int_equal(braid_http_request_ex(f.c, &ro, &d, &call), 0);
  oc_watch(d, &o);
  feed(f.mt[1], "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
  braid_memory_transport_lose(f.mt[1], BRAID_ECONNRESET);
  assert_int_equal(s3.ended, 1);
  assert_int_equal(s3.status, BRAID_ECONNRESET);
  oc_clear(&o);
  fx_done(&f);
}

static void t_stream_request_body(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  braid_http_request_options ro = {0};
  ro.method = "PUT";
  ro.url = "http://h/up";
  ro.stream_body = true;
  ro.body_length = -1;
  braid_deferred_t d;
  braid_http_call_t *call;
  f.refuse_later = 1; /* hold the connection back: writes are queued */
  assert_int_equal(braid_http_request_ex(f.c, &ro, &d, &call), 0);
  outcome o;
  oc_watch(d, &o);
  assert_int_equal(braid_http_call_write(call, "hello", 5), 0);
  assert_int_equal(braid_http_call_write(call, "", 0), 0);
  /* now the connection comes up */
  braid_memory_transport_t *mt;
  assert_int_equal(braid_memory_transport_create(f.r, f.pending, &mt), 0);
  f.mt[f.nmt++] = mt;
  assert_string_equal(sent(mt), "PUT /up HTTP/1.1\r\nHost: h\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n"
                                "5\r\nhello\r\n");
  assert_int_equal(braid_http_call_write(call, " world", 6), 0);
  assert_int_equal(braid_http_call_finish(call), 0);
  assert_int_equal(braid_http_call_finish(call), BRAID_EINVAL);
  assert_string_equal(sent(mt), "PUT /up HTTP/1.1\r\nHost: h\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n"
                                "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  feed(mt, "HTTP/1.1 204 No Content\r\n\r\n");
  assert_int_equal(o.code, 0);
  oc_clear(&o);
  assert_int_equal(braid_http_client_idle_connections(f.c), 1);

  /* Known length; 100-continue holds the body until the server agrees. */
  f.refuse_later = 0;
  braid_memory_transport_clear(mt);
  ro.body_length = 4;
  ro.expect_continue = true;
  assert_int_equal(braid_http_request_ex(f.c, &ro, &d, &call), 0);
  oc_watch(d, &o);
  assert_int_equal(braid_http_call_write(call, "abcde", 5), BRAID_ELIMIT);
  assert_int_equal(braid_http_call_write(call, "ab", 2), 0);
  assert_int_equal(braid_http_call_finish(call), BRAID_EINVAL);
  assert_int_equal(braid_http_call_write(call, "cd", 2), 0);
  assert_int_equal(braid_http_call_finish(call), 0);
  assert_string_equal(sent(mt), "PUT /up HTTP/1.1\r\nHost: h\r\n"
                                "Content-Length: 4\r\n"
                                "Expect: 100-continue\r\n\r\n");
  feed(mt, "HTTP/1.1 100 Continue\r\n\r\n");
  assert_string_equal(sent(mt), "PUT /up HTTP/1.1\r\nHost: h\r\n"
                                "Content-Length: 4\r\n"
                                "Expect: 100-continue\r\n\r\nabcd");
  feed(mt, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  assert_int_equal(o.code, 0);
  oc_clear(&o);
  assert_int_equal(braid_http_client_idle_connections(f.c), 1);

  /* No 100 within continue_timeout (1 s): the body goes anyway. */
  braid_memory_transport_clear(mt);
  assert_int_equal(
      braid_http_request(f.c, "GET", "http://h/", NULL, 0, NULL, 0, &d), 0);
  oc_watch(d, &o);
  feed(mt, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  oc_clear(&o);
  braid_memory_transport_clear(mt);
  ro.stream_body = false;
  ro.body = "xyz";
  ro.body_len = 3;
  assert_int_equal(braid_http_request_ex(f.c, &ro, &d, NULL), 0);
  oc_watch(d, &o);
  size_t n;
  braid_memory_transport_value(mt, &n);
  braid_clock_advance(f.r, SEC);
  assert_string_equal(sent(mt) + n, "xyz");
  /* A final answer without 100 is taken, and the connection is not
   * reused. */
  braid_memory_transport_clear(mt);
  assert_int_equal(braid_http_request_ex(f.c, &ro, &d, NULL), 0);
  outcome o2;
  oc_watch(d, &o2);
  feed(mt, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  oc_clear(&o);
  assert_int_equal(f.nmt, 2);
  feed(f.mt[1], "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n");
  assert_int_equal(o2.resp->status, 417);
  oc_clear(&o2);
  braid_clock_advance(f.r, 0);
  assert_true(braid_memory_transport_disconnected(f.mt[1], NULL));
  fx_done(&f);
}

/* The streaming form sees the same bytes at every split. */
static void t_stream_split(void **st) {
  (void)st;
  size_t n = strlen(chunked_resp);
  for (size_t i = 1; i <= n; i++) {
    fx f;
    fx_init(&f, NULL);
    sink s = {0};
    braid_http_body_handlers h = {
        .body_data = sk_data, .body_end = sk_end, .user = &s};
    braid_http_request_options ro = {0};
    ro.url = "http://h/";
    ro.handlers = &h;
    braid_deferred_t d;
    assert_int_equal(braid_http_request_ex(f.c, &ro, &d, NULL), 0);
    outcome o;
    oc_watch(d, &o);
    assert_int_equal(braid_memory_transport_feed(f.mt[0], chunked_resp, i), 0);
    if (i < n)
      assert_int_equal(
          braid_memory_transport_feed(f.mt[0], chunked_resp + i, n - i), 0);
    assert_int_equal(o.code, 0);
    assert_int_equal(s.ended, 1);
    assert_int_equal(s.status, 0);
    assert_int_equal(s.len, 12);
    assert_memory_equal(s.buf, "hello world!", 12);
    oc_clear(&o);
    assert_int_equal(braid_http_client_idle_connections(f.c), 1);
    fx_done(&f);
  }
}

/* The server answers before the streamed request body is finished (an
 * early 413): the answer is taken, the connection is not reused. */
static void t_early_answer(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  braid_http_request_options ro = {0};
  ro.method = "POST";
  ro.url = "http://h/";
  ro.stream_body = true;
  ro.body_length = -1;
  braid_deferred_t d;
  braid_http_call_t *call;
  assert_int_equal(braid_http_request_ex(f.c, &ro, &d, &call), 0);
  outcome o;
  oc_watch(d, &o);
  assert_int_equal(braid_http_call_write(call, "partial", 7), 0);
  feed(f.mt[0], "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n");
  assert_int_equal(o.code, 0);
  assert_int_equal(o.resp->status, 413);
  oc_clear(&o);
  braid_clock_advance(f.r, 1);
  assert_int_equal(braid_http_client_open_connections(f.c), 0);
  fx_done(&f);
}

typedef struct flow {
  int paused, resumed;
} flow;

static void fl_writable(braid_http_call_t *call, bool paused, void *user) {
  (void)call;
  flow *fl = user;
  if (paused)
    fl->paused++;
  else
    fl->resumed++;
}

static void t_stream_request_flow(void **st) {
  (void)st;
  fx f;
  fx_init(&f, NULL);
  flow fl = {0};
  braid_http_body_handlers h = {.body_writable = fl_writable, .user = &fl};
  braid_http_request_options ro = {0};
  ro.method = "POST";
  ro.url = "http://h/";
  ro.stream_body = true;
  ro.body_length = -1;
  ro.handlers = &h;
  braid_deferred_t d;
  braid_http_call_t *call;
  assert_int_equal(braid_http_request_ex(f.c, &ro, &d, &call), 0);
  outcome o;
  oc_watch(d, &o);
  /* A slow server: writes queue up in the transport until its high-water
   * mark (64 KiB) pauses the writer. */
  assert_int_equal(braid_memory_transport_set_consumer_blocked(f.mt[0], true),
                   0);
  static char piece[4096];
  memset(piece, 'p', sizeof piece);
  for (int i = 0; i < 40 && fl.paused == 0; i++)
    assert_int_equal(braid_http_call_write(call, piece, sizeof piece), 0);
  assert_int_equal(fl.paused, 1);
  assert_int_equal(braid_memory_transport_set_consumer_blocked(f.mt[0], false),
                   0);
  assert_int_equal(fl.resumed, 1);
  assert_int_equal(braid_http_call_finish(call), 0);
  feed(f.mt[0], "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  assert_int_equal(o.code, 0);
  oc_clear(&o);
  fx_done(&f);
}

/* ------------------------------------------------------------------------
 * Out of memory: fail the Nth allocation of a whole exchange, for every N
 * until the exchange needs no more; nothing may crash or leak (ASan and
 * valgrind runs check the leaks).
 * ------------------------------------------------------------------------ */

static long oom_left = -1;

static void *oom_malloc(size_t n) {
  if (oom_left == 0)
    return NULL;
  if (oom_left > 0)
    oom_left--;
  return malloc(n);
}
static void *oom_realloc(void *p, size_t n) {
  if (oom_left == 0)
    return NULL;
  if (oom_left > 0)
    oom_left--;
  return realloc(p, n);
}
static void *oom_calloc(size_t c, size_t n) {
  if (oom_left == 0)
    return NULL;
  if (oom_left > 0)
    oom_left--;
  return calloc(c, n);
}

/* Out of memory, braid logs what it had to drop; expected here. */
static void quiet_log(void *arg, braid_log_level level, const char *domain,
                      const char *msg) {
  (void)arg;
  (void)level;
  (void)domain;
  (void)msg;
}

static void t_oom(void **st) {
  (void)st;
  assert_int_equal(
      braid_set_allocator(oom_malloc, oom_realloc, oom_calloc, free), 0);
  bool completed = false;
  for (long n = 0; n < 400 && !completed; n++) {
    oom_left = -1;
    fx f;
    fx_init(&f, NULL);
    braid_reactor_set_log(f.r, quiet_log, NULL);
    oom_left = n;
    outcome o;
    memset(&o, 0, sizeof o);
    braid_deferred_t d;
    int rc = braid_http_request(f.c, "GET", "http://h/x", NULL, 0, NULL, 0, &d);
    if (rc == 0) {
      if (braid_deferred_add_callbacks(d, oc_ok, &o, oc_err, &o) < 0)
        braid_deferred_cancel(d);
      if (f.nmt > 0 && !braid_memory_transport_disconnected(f.mt[0], NULL)) {
        braid_memory_transport_feed(f.mt[0], chunked_resp,
                                    strlen(chunked_resp));
      }
      if (o.fired && o.code == 0 && oom_left != 0) {
        assert_string_equal(o.resp->body, "hello world!");
        completed = true;
      }
      oc_clear(&o);
    } else {
      assert_int_equal(rc, BRAID_ENOMEM);
    }
    oom_left = -1;
    fx_done(&f);
  }
  braid_reset_allocator();
  assert_true(completed);
}

/* ------------------------------------------------------------------------
 * Real sockets on 127.0.0.1
 * ------------------------------------------------------------------------ */

typedef struct real {
  braid_reactor_t *r;
  braid_http_client_t *c;
} real;

static void real_init(real *x, const braid_http_client_options *o) {
  assert_int_equal(braid_reactor_create(&x->r, NULL), 0);
  assert_int_equal(braid_http_client_create(x->r, o, &x->c), 0);
}

static void real_done(real *x) {
  braid_http_client_destroy(x->c);
  for (int i = 0; i < 10; i++)
    braid_reactor_run_once(x->r, false);
  assert_int_equal(braid_reactor_destroy(x->r), 0);
}

/* Run the loop until the outcome fires (or 10 s pass). */
static void real_wait(real *x, outcome *o) {
  uint64_t start = braid_hrtime();
  while (o->fired == 0 && braid_hrtime() - start < 10 * SEC)
    braid_reactor_run_once(x->r, true);
  assert_int_equal(o->fired, 1);
}

static braid_protocol_t *refuse_build(braid_factory_t *f,
                                      const braid_addr_t *peer) {
  (void)f;
  (void)peer;
  return NULL;
}

/* A port nothing listens on (bound, then closed). */
static uint16_t free_port(void) {
  braid_reactor_t *r;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid_factory_t fac = {refuse_build, NULL};
  braid_listener_t *l;
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, "127.0.0.1", 0), 0);
  assert_int_equal(braid_listen(r, &a, NULL, &fac, &l), 0);
  braid_listener_addr(l, &a);
  uint16_t port = braid_addr_port(&a);
  braid_listener_close(l);
  braid_reactor_destroy(r);
  return port;
}

static void t_real_refused(void **st) {
  (void)st;
  real x;
  real_init(&x, NULL);
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)free_port());
  braid_deferred_t d;
  outcome o;
  assert_int_equal(braid_http_request(x.c, "GET", url, NULL, 0, NULL, 0, &d),
                   0);
  oc_watch(d, &o);
  real_wait(&x, &o);
  assert_int_equal(o.code, BRAID_ECONNREFUSED);
  /* a name goes through the thread-pool resolver */
  snprintf(url, sizeof url, "http://localhost:%u/", (unsigned)free_port());
  assert_int_equal(braid_http_request(x.c, "GET", url, NULL, 0, NULL, 0, &d),
                   0);
  oc_watch(d, &o);
  real_wait(&x, &o);
  assert_int_equal(o.code, BRAID_ECONNREFUSED);
  real_done(&x);
}

/* A small braid server on loopback, for the pool's behaviour over real
 * sockets on every poller. It answers each request head (bodies are not
 * expected) according to its mode. */
typedef enum { SRV_OK, SRV_CLOSE_AFTER, SRV_DROP_SECOND, SRV_SILENT } srv_mode;

typedef struct srv {
  braid_factory_t f;
  braid_listener_t *l;
  srv_mode mode;
  int conns;    /* accepted */
  int requests; /* heads seen */
  uint16_t port;
} srv;

typedef struct srv_conn {
  braid_protocol_t p;
  srv *s;
  int id, nreq;
  char buf[4096];
  size_t len;
} srv_conn;

static void srv_data(braid_protocol_t *p, const void *data, size_t len) {
  srv_conn *sc = (srv_conn *)p;
  if (sc->len + len >= sizeof sc->buf)
    len = sizeof sc->buf - 1 - sc->len;
  memcpy(sc->buf + sc->len, data, len);
  sc->len += len;
  sc->buf[sc->len] = '\0';
  char *e;
  while ((e = strstr(sc->buf, "\r\n\r\n")) != NULL) {
    size_t hl = (size_t)(e + 4 - sc->buf);
    memmove(sc->buf, sc->buf + hl, sc->len - hl + 1);
    sc->len -= hl;
    sc->nreq++;
    sc->s->requests++;
    if (sc->s->mode == SRV_SILENT)
      continue;
    if (sc->s->mode == SRV_DROP_SECOND && sc->nreq == 2) {
      braid_transport_close(p->transport);
      return;
    }
    char body[64], out[160];
    int bl = snprintf(body, sizeof body, "req %d on conn %d", sc->nreq, sc->id);
    int n =
        snprintf(out, sizeof out,
                 "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", bl, body);
    braid_transport_write(p->transport, out, (size_t)n);
    if (sc->s->mode == SRV_CLOSE_AFTER) {
      braid_transport_close(p->transport);
      return;
    }
  }
}

static void srv_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  free(p);
}

static const braid_protocol_ops srv_ops = {.data_received = srv_data,
                                           .connection_lost = srv_lost};

static braid_protocol_t *srv_build(braid_factory_t *f,
                                   const braid_addr_t *peer) {
  (void)peer;
  srv *s = (srv *)f;
  srv_conn *sc = calloc(1, sizeof *sc);
  if (sc == NULL)
    return NULL;
  sc->p.ops = &srv_ops;
  sc->s = s;
  sc->id = ++s->conns;
  return &sc->p;
}

static void srv_start(real *x, srv *s, srv_mode mode) {
  memset(s, 0, sizeof *s);
  s->f.build = srv_build;
  s->mode = mode;
  braid_addr_t a;
  assert_int_equal(braid_addr_ip(&a, "127.0.0.1", 0), 0);
  assert_int_equal(braid_listen(x->r, &a, NULL, &s->f, &s->l), 0);
  braid_listener_addr(s->l, &a);
  s->port = braid_addr_port(&a);
}

static outcome *real_get(real *x, srv *s, const char *path, outcome *o) {
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)s->port, path);
  braid_deferred_t d;
  assert_int_equal(braid_http_request(x->c, "GET", url, NULL, 0, NULL, 0, &d),
                   0);
  oc_watch(d, o);
  real_wait(x, o);
  return o;
}

/* Turn the loop until `cond` holds or 5 s pass. */
#define SPIN_UNTIL(x, cond)                                                    \
  do {                                                                         \
    uint64_t t0_ = braid_hrtime();                                             \
    while (!(cond) && braid_hrtime() - t0_ < 5 * SEC)                          \
      braid_reactor_run_once((x)->r, true);                                    \
  } while (0)

static void t_loopback_pool(void **st) {
  (void)st;
  real x;
  real_init(&x, NULL);
  srv s;
  srv_start(&x, &s, SRV_OK);
  outcome o;
  for (int i = 1; i <= 3; i++) {
    real_get(&x, &s, "/", &o);
    assert_int_equal(o.code, 0);
    char want[64];
    snprintf(want, sizeof want, "req %d on conn 1", i);
    assert_string_equal(o.resp->body, want);
    oc_clear(&o);
  }
  assert_int_equal(s.conns, 1);
  braid_listener_close(s.l);

  /* An IPv6 literal, where the host has ::1. */
  braid_addr_t a6;
  braid_listener_t *l6;
  assert_int_equal(braid_addr_ip(&a6, "::1", 0), 0);
  if (braid_listen(x.r, &a6, NULL, &s.f, &l6) == 0) {
    braid_listener_addr(l6, &a6);
    char url[128];
    snprintf(url, sizeof url, "http://[::1]:%u/six",
             (unsigned)braid_addr_port(&a6));
    braid_deferred_t d;
    assert_int_equal(braid_http_request(x.c, "GET", url, NULL, 0, NULL, 0, &d),
                     0);
    oc_watch(d, &o);
    real_wait(&x, &o);
    assert_int_equal(o.code, 0);
    assert_string_equal(o.resp->body, "req 1 on conn 2");
    oc_clear(&o);
    braid_listener_close(l6);
  } else {
    print_message("no IPv6 loopback here; the [::1] case is skipped\n");
  }
  real_done(&x);
}

static void t_loopback_server_closes(void **st) {
  (void)st;
  real x;
  real_init(&x, NULL);
  srv s;
  /* The server closes each connection after answering, without saying
   * so: the idle connection goes when its EOF arrives. */
  srv_start(&x, &s, SRV_CLOSE_AFTER);
  outcome o;
  real_get(&x, &s, "/", &o);
  assert_string_equal(o.resp->body, "req 1 on conn 1");
  oc_clear(&o);
  SPIN_UNTIL(&x, braid_http_client_open_connections(x.c) == 0);
  assert_int_equal(braid_http_client_open_connections(x.c), 0);
  real_get(&x, &s, "/", &o);
  assert_string_equal(o.resp->body, "req 1 on conn 2");
  oc_clear(&o);
  braid_listener_close(s.l);
  real_done(&x);

  /* The server drops the second request on a kept-alive connection: the
   * GET is sent again, once, on a new connection. */
  real_init(&x, NULL);
  srv_start(&x, &s, SRV_DROP_SECOND);
  real_get(&x, &s, "/", &o);
  assert_string_equal(o.resp->body, "req 1 on conn 1");
  oc_clear(&o);
  real_get(&x, &s, "/", &o);
  assert_int_equal(o.code, 0);
  assert_string_equal(o.resp->body, "req 1 on conn 2");
  assert_false(o.resp->reused_connection);
  oc_clear(&o);
  assert_int_equal(s.requests, 3);
  braid_listener_close(s.l);
  real_done(&x);
}

static void t_loopback_timeout(void **st) {
  (void)st;
  braid_http_client_options opts = {0};
  opts.response_timeout = 100 * MS;
  real x;
  real_init(&x, &opts);
  srv s;
  srv_start(&x, &s, SRV_SILENT);
  outcome o;
  uint64_t t0 = braid_hrtime();
  real_get(&x, &s, "/", &o);
  assert_int_equal(o.code, BRAID_ETIMEDOUT);
  assert_true(braid_hrtime() - t0 >= 90 * MS);
  SPIN_UNTIL(&x, braid_http_client_open_connections(x.c) == 0);
  assert_int_equal(braid_http_client_open_connections(x.c), 0);
  /* Reactor destroy with a request in flight on a real socket: the
   * request fails, the client and its connection are freed. */
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)s.port);
  braid_deferred_t d;
  assert_int_equal(braid_http_request(x.c, "GET", url, NULL, 0, NULL, 0, &d),
                   0);
  oc_watch(d, &o);
  SPIN_UNTIL(&x, s.requests == 2);
  assert_int_equal(braid_reactor_destroy(x.r), 0);
  assert_int_equal(o.fired, 1);
  assert_int_not_equal(o.code, 0);
}

/* Find a program on PATH. */
static bool which(const char *prog, char *out, size_t n) {
  const char *path = getenv("PATH");
  if (path == NULL)
    path = "/usr/bin:/bin";
  const char *extra = ":/usr/sbin:/sbin";
  char buf[4096];
  snprintf(buf, sizeof buf, "%s%s", path, extra);
  for (char *save = NULL, *dir = strtok_r(buf, ":", &save); dir != NULL;
       dir = strtok_r(NULL, ":", &save)) {
    snprintf(out, n, "%s/%s", dir, prog);
    if (access(out, X_OK) == 0)
      return true;
  }
  return false;
}

/* Servers this test started, stopped by the teardown even when an
 * assertion jumped out of the test. */
static pid_t children[4];

static pid_t spawn(char *const argv[], const char *dir) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
#ifdef __linux__
    /* If the test is killed (a timeout), take the server with it. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
    if (dir != NULL && chdir(dir) != 0)
      _exit(127);
    /* quiet: the servers log each request */
    FILE *devnull = freopen("/dev/null", "w", stderr);
    devnull = freopen("/dev/null", "w", stdout);
    (void)devnull;
    execv(argv[0], argv);
    _exit(127);
  }
  for (size_t i = 0; i < 4; i++)
    if (children[i] == 0) {
      children[i] = pid;
      break;
    }
  return pid;
}

static void stop(pid_t pid) {
  if (pid <= 0)
    return;
  for (size_t i = 0; i < 4; i++)
    if (children[i] == pid)
      children[i] = 0;
  kill(pid, SIGTERM);
  int status;
  for (int i = 0; i < 200; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      return;
    usleep(10000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

/* Poll the port until the server accepts (it is ready in 30-400 ms). */
static bool wait_port(uint16_t port, pid_t pid) {
  for (int i = 0; i < 500; i++) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid)
      return false; /* it died */
    real x;
    real_init(&x, NULL);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", (unsigned)port);
    braid_deferred_t d;
    outcome o;
    assert_int_equal(braid_http_request(x.c, "HEAD", url, NULL, 0, NULL, 0, &d),
                     0);
    oc_watch(d, &o);
    real_wait(&x, &o);
    oc_clear(&o);
    real_done(&x);
    if (o.code != BRAID_ECONNREFUSED)
      return true;
    usleep(10000);
  }
  return false;
}

static char scratch[256];

static void make_scratch(void) {
  snprintf(scratch, sizeof scratch, "/tmp/braid-http-client-%d", (int)getpid());
  mkdir(scratch, 0755); /* nginx's workers run as nobody */
}

static void rm_scratch(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", scratch);
  scratch[0] = '\0';
}

static char *write_file(const char *name, size_t size) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", scratch, name);
  char *data = malloc(size + 1);
  assert_non_null(data);
  /* Bytes that are not text, so a mangled transfer shows. */
  uint32_t x = 12345;
  for (size_t i = 0; i < size; i++) {
    x = x * 1103515245u + 12345u;
    data[i] = (char)(x >> 16);
  }
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(data, 1, size, fp), size);
  fclose(fp);
  return data;
}

/* GET url and check the answer; returns whether it came chunked. */
static bool fetch_check(real *x, const char *url, int status, const char *want,
                        size_t want_len, bool reused) {
  braid_deferred_t d;
  outcome o;
  assert_int_equal(braid_http_request(x->c, "GET", url, NULL, 0, NULL, 0, &d),
                   0);
  oc_watch(d, &o);
  real_wait(x, &o);
  if (o.code != 0)
    fail_msg("GET %s: %s", url, braid_strerror(o.code));
  assert_int_equal(o.resp->status, status);
  if (want != NULL) {
    assert_int_equal(o.resp->body_len, want_len);
    assert_memory_equal(o.resp->body, want, want_len);
  }
  assert_int_equal(o.resp->reused_connection, reused);
  const braid_http_view_t *te =
      braid_http_client_response_header(o.resp, "transfer-encoding");
  bool chunked =
      te != NULL && te->len == 7 && memcmp(te->ptr, "chunked", 7) == 0;
  oc_clear(&o);
  return chunked;
}

static void rm_scratch(void);

static int interop_teardown(void **st) {
  (void)st;
  for (size_t i = 0; i < 4; i++)
    stop(children[i]);
  if (scratch[0] != '\0')
    rm_scratch();
  return 0;
}

static void t_interop_python(void **st) {
  (void)st;
  char py[512];
  if (!which("python3", py, sizeof py)) {
    print_message("python3 is not installed; skipped\n");
    skip();
  }
  make_scratch();
  char *small = write_file("small.txt", 13);
  char *big = write_file("big.bin", 3 * 1024 * 1024 + 7);
  uint16_t port = free_port();
  char ports[16];
  snprintf(ports, sizeof ports, "%u", (unsigned)port);
  char *argv[] = {py,          "-m",         "http.server", ports, "--bind",
                  "127.0.0.1", "--protocol", "HTTP/1.1",    NULL};
  pid_t pid = spawn(argv, scratch);
  if (!wait_port(port, pid)) {
    stop(pid);
    rm_scratch();
    fail_msg("python3 -m http.server did not start on port %u", port);
  }
  real x;
  real_init(&x, NULL);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/small.txt", (unsigned)port);
  fetch_check(&x, url, 200, small, 13, false);
  /* http.server in HTTP/1.1 mode keeps the connection: reused. */
  snprintf(url, sizeof url, "http://127.0.0.1:%u/big.bin", (unsigned)port);
  fetch_check(&x, url, 200, big, 3 * 1024 * 1024 + 7, true);
  snprintf(url, sizeof url, "http://127.0.0.1:%u/missing", (unsigned)port);
  /* http.server sends its error pages with "Connection: close". */
  fetch_check(&x, url, 404, NULL, 0, true);
  assert_int_equal(braid_http_client_idle_connections(x.c), 0);
  real_done(&x);
  stop(pid);
  free(small);
  free(big);
  rm_scratch();
}

static void t_interop_nginx(void **st) {
  (void)st;
  char nginx[512];
  if (!which("nginx", nginx, sizeof nginx)) {
    print_message("nginx is not installed (Debian: nginx-light); skipped\n");
    skip();
  }
  make_scratch();
  char *big = write_file("big.bin", 2 * 1024 * 1024 + 3);
  size_t page_len = 300000;
  char *page = malloc(page_len);
  assert_non_null(page);
  for (size_t i = 0; i < page_len; i++)
    page[i] = (i % 61 == 60) ? '\n' : (char)('a' + (i * 7) % 26);
  char path[512];
  snprintf(path, sizeof path, "%s/page.html", scratch);
  FILE *pf = fopen(path, "wb");
  assert_non_null(pf);
  assert_int_equal(fwrite(page, 1, page_len, pf), page_len);
  fclose(pf);
  uint16_t port = free_port();
  char conf[512];
  snprintf(conf, sizeof conf, "%s/nginx.conf", scratch);
  FILE *fp = fopen(conf, "w");
  assert_non_null(fp);
  fprintf(fp,
          "daemon off;\nworker_processes 1;\npid %1$s/nginx.pid;\n"
          "error_log %1$s/error.log;\n"
          "events { worker_connections 64; }\n"
          "http {\n"
          "  access_log off;\n"
          "  client_body_temp_path %1$s/body;\n"
          "  proxy_temp_path %1$s/proxy;\n"
          "  fastcgi_temp_path %1$s/fastcgi;\n"
          "  uwsgi_temp_path %1$s/uwsgi;\n"
          "  scgi_temp_path %1$s/scgi;\n"
          "  keepalive_requests 1000;\n"
          "  server {\n"
          "    listen 127.0.0.1:%2$u;\n"
          "    root %1$s;\n"
          "    location = /fixed { return 200 \"fixed body\\n\"; }\n"
          "    chunked_transfer_encoding on;\n"
          "    location ~ \\.html$ { ssi on; }\n"
          "  }\n"
          "}\n",
          scratch, (unsigned)port);
  fclose(fp);
  snprintf(path, sizeof path, "%s/error.log", scratch);
  char *argv[] = {nginx, "-c", conf, "-e", path, NULL};
  pid_t pid = spawn(argv, scratch);
  if (!wait_port(port, pid)) {
    stop(pid);
    rm_scratch();
    fail_msg("nginx did not start on port %u", port);
  }
  real x;
  real_init(&x, NULL);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/fixed", (unsigned)port);
  fetch_check(&x, url, 200, "fixed body\n", 11, false);
  snprintf(url, sizeof url, "http://127.0.0.1:%u/big.bin", (unsigned)port);
  fetch_check(&x, url, 200, big, 2 * 1024 * 1024 + 3, true);
  /* Through the SSI filter nginx does not know the length in advance and
   * answers chunked (the page has no SSI commands: same bytes). */
  snprintf(url, sizeof url, "http://127.0.0.1:%u/page.html", (unsigned)port);
  assert_true(fetch_check(&x, url, 200, page, page_len, true));
  snprintf(url, sizeof url, "http://127.0.0.1:%u/nope", (unsigned)port);
  fetch_check(&x, url, 404, NULL, 0, true);
  assert_int_equal(braid_http_client_open_connections(x.c), 1);
  /* Twenty at once: six connections (the default cap), the rest queued,
   * every answer whole. */
  snprintf(url, sizeof url, "http://127.0.0.1:%u/big.bin", (unsigned)port);
  outcome many[20];
  for (int i = 0; i < 20; i++) {
    braid_deferred_t d;
    assert_int_equal(braid_http_request(x.c, "GET", url, NULL, 0, NULL, 0, &d),
                     0);
    oc_watch(d, &many[i]);
  }
  assert_true(braid_http_client_open_connections(x.c) <= 6);
  for (int i = 0; i < 20; i++) {
    real_wait(&x, &many[i]);
    assert_int_equal(many[i].code, 0);
    assert_int_equal(many[i].resp->body_len, 2 * 1024 * 1024 + 3);
    assert_memory_equal(many[i].resp->body, big, 2 * 1024 * 1024 + 3);
    oc_clear(&many[i]);
  }
  assert_int_equal(braid_http_client_open_connections(x.c), 6);
  real_done(&x);
  stop(pid);
  free(big);
  free(page);
  rm_scratch();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_url),
      cmocka_unit_test(t_bad_args),
      cmocka_unit_test(t_get_and_reuse),
      cmocka_unit_test(t_post_body),
      cmocka_unit_test(t_chunked_split),
      cmocka_unit_test(t_no_body_responses),
      cmocka_unit_test(t_close_delimited),
      cmocka_unit_test(t_not_reused),
      cmocka_unit_test(t_bad_responses),
      cmocka_unit_test(t_limits),
      cmocka_unit_test(t_retry_idempotent),
      cmocka_unit_test(t_cap_and_queue),
      cmocka_unit_test(t_timeouts),
      cmocka_unit_test(t_connect_errors),
      cmocka_unit_test(t_cancel),
      cmocka_unit_test(t_reactor_destroy_in_flight),
      cmocka_unit_test(t_client_destroy_in_flight),
      cmocka_unit_test(t_destroy_from_callback),
      cmocka_unit_test(t_stream_response),
      cmocka_unit_test(t_stream_request_body),
      cmocka_unit_test(t_stream_request_flow),
      cmocka_unit_test(t_stream_split),
      cmocka_unit_test(t_early_answer),
      cmocka_unit_test(t_oom),
      cmocka_unit_test(t_real_refused),
      cmocka_unit_test(t_loopback_pool),
      cmocka_unit_test(t_loopback_server_closes),
      cmocka_unit_test(t_loopback_timeout),
  };
  const struct CMUnitTest interop[] = {
      cmocka_unit_test_teardown(t_interop_python, interop_teardown),
      cmocka_unit_test_teardown(t_interop_nginx, interop_teardown),
  };
  /* The interop tests start real servers; run them once (not per poller)
   * when BRAID_HTTP_INTEROP is set (tests/meson.build does that). */
  const char *only = getenv("BRAID_HTTP_INTEROP");
  if (only != NULL && only[0] == '1')
    return cmocka_run_group_tests_name("http_client_interop", interop, NULL,
                                       NULL);
  return cmocka_run_group_tests_name("http_client", tests, NULL, NULL);
}
