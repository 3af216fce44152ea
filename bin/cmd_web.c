/* braid web: serve a folder over HTTP/1.1, like Twisted's
 * `twist web --path`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bin/runner.h"
#include "braid/http.h"
#include "braid/tls.h"

/* "tcp:REST" -> "tls:REST:certificate=C:privateKey=K" + `extra` (already
 * escaped), escaping ':' and '\\' in the file names as endpoint strings
 * want. NULL when `ep` is not a tcp: description (or without memory). */
static char *web_tls_endpoint(const char *ep, const char *cert, const char *key,
                              const char *extra) {
  if (strncmp(ep, "tcp:", 4) != 0)
    return NULL;
  /* Every byte of a file name may double; 64 for the fixed parts. */
  size_t size =
      strlen(ep) + 2 * (strlen(cert) + strlen(key)) + strlen(extra) + 64;
  char *out = malloc(size);
  if (out == NULL)
    return NULL;
  size_t n = (size_t)snprintf(out, size, "tls:%s", ep + 4);
  const char *names[2] = {":certificate=", ":privateKey="};
  const char *vals[2] = {cert, key};
  for (int k = 0; k < 2; k++) {
    n += (size_t)snprintf(out + n, size - n, "%s", names[k]);
    for (const char *v = vals[k]; *v != '\0'; v++) {
      if (*v == ':' || *v == '\\')
        out[n++] = '\\';
      out[n++] = *v;
    }
    out[n] = '\0';
  }
  snprintf(out + n, size - n, "%s", extra);
  return out;
}

static void web_hello(braid_http_req_t *req, void *arg) {
  (void)arg;
  static const braid_http_field_t f[1] = {{"Content-Type", "text/plain"}};
  braid_http_respond(req, 200, f, 1, "hello, world\n", 13);
}

/* POST /echo: the request body streams back as it arrives (chunked), so
 * an upload of any size costs the server one read buffer. The body is
 * asked for at once, which answers "Expect: 100-continue". */
typedef struct web_echo {
  int started;
} web_echo;

static void web_echo_data(braid_http_req_t *req, const void *d, size_t n,
                          void *arg) {
  web_echo *x = arg;
  if (!x->started) {
    static const braid_http_field_t f[1] = {
        {"Content-Type", "application/octet-stream"}};
    x->started = 1;
    braid_http_start(req, 200, f, 1, BRAID_HTTP_LENGTH_UNKNOWN);
  }
  braid_http_write(req, d, n);
}

static void web_echo_end(braid_http_req_t *req, int status, void *arg) {
  web_echo *x = arg;
  if (x->started)
    braid_http_finish(req);
  else if (status == BRAID_ELIMIT)
    braid_http_respond(req, 413, NULL, 0, "too large\n", 10);
  else if (status < 0)
    braid_http_respond(req, 400, NULL, 0, "bad body\n", 9);
  else
    braid_http_respond(req, 200, NULL, 0, NULL, 0);
  free(x);
}

static const braid_http_body_ops web_echo_ops = {web_echo_data, web_echo_end};

static void web_echo_h(braid_http_req_t *req, void *arg) {
  (void)arg;
  web_echo *x = calloc(1, sizeof *x);
  if (x == NULL || braid_http_read_body(req, &web_echo_ops, x) < 0) {
    free(x);
    braid_http_respond(req, 500, NULL, 0, NULL, 0);
  }
}

/* The listeners' drain callback, once per open connection when a graceful
 * stop begins: the server-wide drain (idle connections close now, the
 * others after their response) covers them all the first time. */
static void web_drain(braid_protocol_t *p, braid_transport_t *t, void *arg) {
  (void)p;
  (void)t;
  braid_http_server_drain(arg);
}

typedef struct web_opts {
  const char *path;
  bool no_listing, dotfiles, hello, echo, no_log;
  const char *tls_cert, *tls_key;
  braid_http_server_options so;
} web_opts;

/* Set up the server and its listeners, then run. */
static int web_serve(braid_runner_t *rt, web_opts *o, braid_http_server_t *srv,
                     char **tls_eps) {
  braid_http_static_options sto = {0};
  sto.no_listing = o->no_listing;
  sto.dotfiles = o->dotfiles;
  braid_http_static_t *st;
  int rc = braid_http_static_create(o->path, &sto, &st);
  if (rc < 0)
    return braid_runner_error(rt, "cannot serve \"%s\": %s", o->path,
                              braid_strerror(rc));
  if (o->hello)
    rc = braid_http_route(srv, "GET", "/hello", web_hello, NULL);
  if (rc == 0 && o->echo)
    rc = braid_http_route(srv, "POST", "/echo", web_echo_h, NULL);
  if (rc == 0)
    rc = braid_http_route(srv, NULL, "/", braid_http_static_handler, st);
  if (rc < 0) {
    braid_http_static_destroy(st);
    return braid_runner_error(rt, "%s", braid_strerror(rc));
  }
  /* HTTP/1.1 is what this server speaks, so ALPN says so (a client
   * offering only h2 gets no ALPN and may still try). The header timeout
   * covers the handshake too: before it completes there is no HTTP
   * connection whose timers could run. */
  char tls_extra[96] = ":alpn=http/1.1";
  if (o->so.header_timeout > 0)
    snprintf(tls_extra + strlen(tls_extra),
             sizeof tls_extra - strlen(tls_extra),
             ":handshake_timeout=%llu.%09llu",
             (unsigned long long)(o->so.header_timeout / 1000000000u),
             (unsigned long long)(o->so.header_timeout % 1000000000u));
  char banner[1200];
  snprintf(banner, sizeof banner, "serving %s on %s", o->path,
           o->tls_cert != NULL ? "https://" : "");
  braid_service_listener_options lo = {0};
  lo.drain = web_drain;
  lo.drain_arg = srv;
  size_t n;
  const char *const *eps =
      braid_runner_endpoints(rt, o->tls_cert != NULL ? "tcp:8443" : NULL, &n);
  int status = 0;
  for (size_t i = 0; status == 0 && i < n; i++) {
    const char *ep = eps[i];
    if (o->tls_cert != NULL) {
      tls_eps[i] = web_tls_endpoint(
          ep, o->tls_cert, o->tls_key != NULL ? o->tls_key : o->tls_cert,
          tls_extra);
      if (tls_eps[i] == NULL) {
        status =
            strncmp(ep, "tcp:", 4) != 0
                ? braid_runner_usage_error(
                      rt, "--tls-cert needs tcp: endpoints, not \"%s\"", ep)
                : braid_runner_error(rt, "out of memory");
        break;
      }
      ep = tls_eps[i];
    }
    status = braid_runner_listen(rt, ep, braid_http_server_factory(srv), &lo,
                                 banner);
  }
  if (status == 0)
    status = braid_runner_run(rt);
  /* The service tree is gone (braid_runner_run), or holds listeners that
   * never started: the files may go, the server follows in web_main. */
  braid_http_static_destroy(st);
  return status;
}

static int web_main(int argc, char **argv, braid_runner_t *rt) {
  web_opts o = {0};
  o.path = ".";
  const braid_option opts[] = {
      {"--path", BRAID_OPT_STRING, &o.path, 0, NULL},
      {"--no-listing", BRAID_OPT_FLAG, &o.no_listing, 0, NULL},
      {"--dotfiles", BRAID_OPT_FLAG, &o.dotfiles, 0, NULL},
      {"--hello", BRAID_OPT_FLAG, &o.hello, 0, NULL},
      {"--echo", BRAID_OPT_FLAG, &o.echo, 0, NULL},
      {"--header-timeout", BRAID_OPT_SECONDS, &o.so.header_timeout, 0, NULL},
      {"--idle-timeout", BRAID_OPT_SECONDS, &o.so.idle_timeout, 0, NULL},
      {"--write-timeout", BRAID_OPT_SECONDS, &o.so.write_timeout, 0, NULL},
      {"--no-log", BRAID_OPT_FLAG, &o.no_log, 0, NULL},
      {"--tls-cert", BRAID_OPT_STRING, &o.tls_cert, 0, NULL},
      {"--tls-key", BRAID_OPT_STRING, &o.tls_key, 0, NULL},
      {NULL, BRAID_OPT_FLAG, NULL, 0, NULL},
  };
  int rc = braid_runner_parse(rt, argc, argv, opts);
  if (rc != BRAID_RUNNER_GO)
    return rc;
  if (o.tls_key != NULL && o.tls_cert == NULL)
    return braid_runner_usage_error(rt, "--tls-key needs --tls-cert");
  if (o.tls_cert != NULL && !braid_tls_available())
    return braid_runner_error(rt, "--tls-cert: this braid was built without "
                                  "TLS (OpenSSL 3 not found)");
  o.so.no_access_log = o.no_log;
  braid_http_server_t *srv;
  rc = braid_http_server_create(braid_runner_reactor(rt), &o.so, &srv);
  if (rc < 0)
    return braid_runner_error(rt, "%s", braid_strerror(rc));
  char *tls_eps[BRAID_RUNNER_LISTEN_MAX] = {0};
  int status = web_serve(rt, &o, srv, tls_eps);
  /* After the tree: the server aborts what is still open, and its memory
   * goes with the last connection (at the latest when the runner destroys
   * the reactor). */
  braid_http_server_destroy(srv);
  for (size_t i = 0; i < sizeof tls_eps / sizeof tls_eps[0]; i++)
    free(tls_eps[i]);
  return status;
}

const braid_command braid_cmd_web = {
    .name = "web",
    .summary = "serve a folder over HTTP/1.1 (and https)",
    .usage =
        "usage: braid web [--path DIR] [--listen ENDPOINT]... [OPTIONS]\n"
        "Serve the files under DIR over HTTP/1.1 (GET and HEAD, ranges,\n"
        "conditional requests, directory listings), one access log line per\n"
        "request on stdout. On SIGTERM or SIGINT: stop accepting, close idle\n"
        "connections, finish the requests in flight (see --drain-timeout).\n"
        "\n"
        "options:\n"
        "  --path DIR             the folder to serve (default: the current "
        "one)\n"
        "  --no-listing           404 for folders without index.html\n"
        "  --dotfiles             publish hidden names (a path segment "
        "starting\n"
        "                         with '.', e.g. /.git/config, /.env): by "
        "default\n"
        "                         they are 404 and left out of listings\n"
        "  --hello                also answer /hello with \"hello, world\" "
        "from\n"
        "                         memory (for benchmarks)\n"
        "  --echo                 also answer POST /echo by streaming the "
        "request\n"
        "                         body back (for interop tests and demos)\n"
        "  --header-timeout SEC   time allowed for a request head, and for "
        "the\n"
        "                         TLS handshake before it (default 10)\n"
        "  --idle-timeout SEC     keep-alive timeout, and time allowed "
        "between\n"
        "                         pieces of a request body (default 60)\n"
        "  --write-timeout SEC    drop a client that reads nothing of what it "
        "is\n"
        "                         sent for this long (default 60; nginx's\n"
        "                         send_timeout)\n"
        "  --no-log               no access log\n"
        "  --tls-cert FILE        serve https: PEM certificate chain (with\n"
        "  --tls-key FILE         its private key; default: the same file);\n"
        "                         tcp: endpoints become tls: ones, and the\n"
        "                         default endpoint is tcp:8443\n",
    .flags = BRAID_CMD_SERVE,
    .listen_default = "tcp:8080",
    .main = web_main,
};
