/* braid: the runner. One program, one subcommand per job, endpoints as
 * --listen strings (see braid/endpoint.h). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/braid.h"

#define MAX_LISTEN 8

typedef struct cli {
  const char *listen[MAX_LISTEN];
  int nlisten;
  int quiet;
} cli;

/* ------------------------------------------------------------------------
 * echo: every byte received is sent back. Flow control: when the peer reads
 * slower than it sends, the connection's own reading pauses at the write
 * queue's high-water mark, so memory stays bounded.
 * ------------------------------------------------------------------------ */

static void echo_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)p;
  (void)t;
}

static void echo_data(braid_protocol_t *p, const void *data, size_t len) {
  braid_transport_write(p->transport, data, len);
}

static void echo_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  free(p);
}

static void echo_pause(braid_protocol_t *p) {
  braid_transport_pause_reading(p->transport);
}

static void echo_resume(braid_protocol_t *p) {
  braid_transport_resume_reading(p->transport);
}

static const braid_protocol_ops echo_ops = {
    .connection_made = echo_made,
    .data_received = echo_data,
    .connection_lost = echo_lost,
    .pause_writing = echo_pause,
    .resume_writing = echo_resume,
};

static braid_protocol_t *echo_build(braid_factory_t *f,
                                    const braid_addr_t *peer) {
  (void)f;
  (void)peer;
  braid_protocol_t *p = calloc(1, sizeof *p);
  if (p != NULL)
    p->ops = &echo_ops;
  return p;
}

/* ------------------------------------------------------------------------
 * Shared plumbing
 * ------------------------------------------------------------------------ */

static void on_stop_signal(braid_signal_t *s, int signo, unsigned count,
                           void *arg) {
  (void)s;
  (void)count;
  braid_reactor_t *r = arg;
  braid_reactor_log(r, BRAID_LOG_INFO, "braid", "signal %d: stopping", signo);
  braid_reactor_stop(r);
}

static int serve(const char *what, cli *c, braid_factory_t *f,
                 const char *default_listen) {
  braid_reactor_t *r;
  int rc = braid_reactor_create(&r, NULL);
  if (rc < 0) {
    fprintf(stderr, "braid: cannot create reactor: %s\n", braid_strerror(rc));
    return 1;
  }
  if (c->nlisten == 0)
    c->listen[c->nlisten++] = default_listen;
  braid_listener_t *ls[MAX_LISTEN];
  int n = 0, status = 0;
  for (int i = 0; i < c->nlisten; i++) {
    char err[256];
    rc = braid_endpoint_listen(r, c->listen[i], f, &ls[n], err, sizeof err);
    if (rc < 0) {
      fprintf(stderr, "braid %s: %s\n", what, err);
      status = 1;
      break;
    }
    braid_addr_t a;
    char buf[128];
    if (!c->quiet && braid_listener_addr(ls[n], &a) == 0 &&
        braid_addr_format(&a, buf, sizeof buf) > 0)
      printf("braid %s: listening on %s (poller %s)\n", what, buf,
             braid_reactor_poller(r));
    n++;
  }
  fflush(stdout);
  braid_signal_t sint = {0}, sterm = {0};
  if (status == 0) {
    braid_signal_start(r, &sint, SIGINT, on_stop_signal, r);
    braid_signal_start(r, &sterm, SIGTERM, on_stop_signal, r);
    rc = braid_reactor_run(r);
    if (rc < 0) {
      fprintf(stderr, "braid %s: %s\n", what, braid_strerror(rc));
      status = 1;
    }
    braid_signal_stop(&sint);
    braid_signal_stop(&sterm);
  }
  /* Destroy closes the listeners and any connection still open. */
  braid_reactor_destroy(r);
  return status;
}

static int parse_listen(int argc, char **argv, cli *c, const char *usage) {
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(usage, stdout);
      return 1;
    }
    if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
      if (c->nlisten == MAX_LISTEN) {
        fprintf(stderr, "braid: at most %d --listen options\n", MAX_LISTEN);
        return 2;
      }
      c->listen[c->nlisten++] = argv[++i];
    } else if (strncmp(argv[i], "--listen=", 9) == 0 &&
               c->nlisten < MAX_LISTEN) {
      c->listen[c->nlisten++] = argv[i] + 9;
    } else if (strcmp(argv[i], "--quiet") == 0) {
      c->quiet = 1;
    } else {
      fprintf(stderr, "braid: unknown argument '%s'\n%s", argv[i], usage);
      return 2;
    }
  }
  return 0;
}

static const char echo_usage[] =
    "usage: braid echo [--listen ENDPOINT]... [--quiet]\n"
    "  Echo every byte back to its sender.\n"
    "  --listen ENDPOINT  where to listen (default tcp:7000), e.g. tcp:7000,\n"
    "                     tcp:port=7000:interface=127.0.0.1, unix:/tmp/echo\n"
    "  --quiet            do not print the listening addresses\n";

static int cmd_echo(int argc, char **argv) {
  cli c = {0};
  int rc = parse_listen(argc, argv, &c, echo_usage);
  if (rc != 0)
    return rc == 1 ? 0 : rc;
  braid_factory_t f = {echo_build, NULL};
  return serve("echo", &c, &f, "tcp:7000");
}

#ifndef _WIN32 /* the HTTP server is POSIX only for now */
/* ------------------------------------------------------------------------
 * web: serve a folder over HTTP/1.1, like Twisted's `twist web --path`.
 * ------------------------------------------------------------------------ */

static const char web_usage[] =
    "usage: braid web [--path DIR] [--listen ENDPOINT]... [OPTIONS]\n"
    "  Serve the files under DIR over HTTP/1.1 (GET and HEAD, ranges,\n"
    "  conditional requests, directory listings), one access log line per\n"
    "  request on stdout.\n"
    "  --path DIR             the folder to serve (default: the current one)\n"
    "  --listen ENDPOINT      where to listen (default tcp:8080), e.g.\n"
    "                         tcp:port=8080:interface=127.0.0.1, unix:/tmp/w\n"
    "  --no-listing           404 for folders without index.html\n"
    "  --dotfiles             publish hidden names (a path segment starting\n"
    "                         with '.', e.g. /.git/config, /.env): by default\n"
    "                         they are 404 and left out of listings\n"
    "  --hello                also answer /hello with \"hello, world\" from\n"
    "                         memory (for benchmarks)\n"
    "  --echo                 also answer POST /echo by streaming the request\n"
    "                         body back (for interop tests and demos)\n"
    "  --header-timeout SEC   time allowed for a request head, and for the\n"
    "                         TLS handshake before it (default 10)\n"
    "  --idle-timeout SEC     keep-alive timeout, and time allowed between\n"
    "                         pieces of a request body (default 60)\n"
    "  --write-timeout SEC    drop a client that reads nothing of what it is\n"
    "                         sent for this long (default 60; nginx's\n"
    "                         send_timeout)\n"
    "  --no-log               no access log\n"
    "  --tls-cert FILE        serve https: PEM certificate chain (with\n"
    "  --tls-key FILE         its private key; default: the same file);\n"
    "                         tcp: endpoints become tls: ones, and the\n"
    "                         default endpoint is tcp:8443\n"
    "  --quiet                do not print the listening addresses\n";

/* "tcp:REST" -> "tls:REST:certificate=C:privateKey=K" + `extra` (already
 * escaped), escaping ':' and '\\' in the file names as endpoint strings
 * want. */
static int web_tls_endpoint(const char *ep, const char *cert, const char *key,
                            const char *extra, char *out, size_t size) {
  if (strncmp(ep, "tcp:", 4) != 0)
    return -1;
  size_t n = (size_t)snprintf(out, size, "tls:%s", ep + 4);
  const char *names[2] = {":certificate=", ":privateKey="};
  const char *vals[2] = {cert, key};
  for (int k = 0; k < 2; k++) {
    n += (size_t)snprintf(out + n, n < size ? size - n : 0, "%s", names[k]);
    for (const char *v = vals[k]; *v != '\0' && n + 3 < size; v++) {
      if (*v == ':' || *v == '\\')
        out[n++] = '\\';
      out[n++] = *v;
    }
    if (n >= size)
      return -1;
    out[n] = '\0';
  }
  n += (size_t)snprintf(out + n, size - n, "%s", extra);
  return n + 1 < size ? 0 : -1;
}

static void web_log(void *arg, braid_log_level level, const char *domain,
                    const char *msg) {
  (void)arg;
  if (strcmp(domain, "access") == 0) {
    /* Line-buffered stdout: a log reader sees each request at once. */
    fputs(msg, stdout);
    fputc('\n', stdout);
    return;
  }
  braid_log_default(NULL, level, domain, msg);
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

typedef struct web_stop {
  braid_reactor_t *r;
  braid_http_server_t *srv;
} web_stop;

static void web_on_signal(braid_signal_t *s, int signo, unsigned count,
                          void *arg) {
  (void)s;
  (void)count;
  web_stop *w = arg;
  braid_reactor_log(w->r, BRAID_LOG_INFO, "braid", "signal %d: stopping",
                    signo);
  braid_reactor_stop(w->r);
}

static int web_seconds(const char *v, uint64_t *out) {
  char *end;
  double d = strtod(v, &end);
  if (end == v || *end != '\0' || !(d > 0) || d > 1e6)
    return -1;
  *out = (uint64_t)(d * 1e9);
  return 0;
}

static int cmd_web(int argc, char **argv) {
  const char *path = ".";
  const char *listen[MAX_LISTEN];
  int nlisten = 0, quiet = 0, hello = 0, echo = 0;
  const char *tls_cert = NULL, *tls_key = NULL;
  static char tls_eps[MAX_LISTEN][1024];
  braid_http_server_options so = {0};
  braid_http_static_options sto = {0};
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(web_usage, stdout);
      return 0;
    } else if (strcmp(a, "--path") == 0 && v != NULL) {
      path = v;
      i++;
    } else if (strncmp(a, "--path=", 7) == 0) {
      path = a + 7;
    } else if (strcmp(a, "--listen") == 0 && v != NULL) {
      if (nlisten == MAX_LISTEN) {
        fprintf(stderr, "braid: at most %d --listen options\n", MAX_LISTEN);
        return 2;
      }
      listen[nlisten++] = v;
      i++;
    } else if (strncmp(a, "--listen=", 9) == 0 && nlisten < MAX_LISTEN) {
      listen[nlisten++] = a + 9;
    } else if (strcmp(a, "--header-timeout") == 0 && v != NULL &&
               web_seconds(v, &so.header_timeout) == 0) {
      i++;
    } else if (strcmp(a, "--idle-timeout") == 0 && v != NULL &&
               web_seconds(v, &so.idle_timeout) == 0) {
      i++;
    } else if (strcmp(a, "--write-timeout") == 0 && v != NULL &&
               web_seconds(v, &so.write_timeout) == 0) {
      i++;
    } else if (strcmp(a, "--no-listing") == 0) {
      sto.no_listing = true;
    } else if (strcmp(a, "--dotfiles") == 0) {
      sto.dotfiles = true;
    } else if (strcmp(a, "--hello") == 0) {
      hello = 1;
    } else if (strcmp(a, "--echo") == 0) {
      echo = 1;
    } else if (strcmp(a, "--no-log") == 0) {
      so.no_access_log = true;
    } else if (strcmp(a, "--tls-cert") == 0 && v != NULL) {
      tls_cert = v;
      i++;
    } else if (strcmp(a, "--tls-key") == 0 && v != NULL) {
      tls_key = v;
      i++;
    } else if (strcmp(a, "--quiet") == 0) {
      quiet = 1;
    } else {
      fprintf(stderr, "braid: bad argument '%s'\n%s", a, web_usage);
      return 2;
    }
  }
  if (tls_key != NULL && tls_cert == NULL) {
    fprintf(stderr, "braid web: --tls-key needs --tls-cert\n");
    return 2;
  }
  if (nlisten == 0)
    listen[nlisten++] = tls_cert != NULL ? "tcp:8443" : "tcp:8080";
  /* HTTP/1.1 is what this server speaks, so ALPN says so (a client
   * offering only h2 gets no ALPN and may still try). The header timeout
   * covers the handshake too: before it completes there is no HTTP
   * connection whose timers could run. */
  char tls_extra[96] = ":alpn=http/1.1";
  if (so.header_timeout > 0)
    snprintf(tls_extra + strlen(tls_extra),
             sizeof tls_extra - strlen(tls_extra),
             ":handshake_timeout=%llu.%09llu",
             (unsigned long long)(so.header_timeout / 1000000000u),
             (unsigned long long)(so.header_timeout % 1000000000u));
  for (int i = 0; tls_cert != NULL && i < nlisten; i++) {
    if (web_tls_endpoint(listen[i], tls_cert, tls_key ? tls_key : tls_cert,
                         tls_extra, tls_eps[i], sizeof tls_eps[i]) < 0) {
      fprintf(stderr, "braid web: --tls-cert needs tcp: endpoints, not '%s'\n",
              listen[i]);
      return 2;
    }
    listen[i] = tls_eps[i];
  }
  braid_http_static_t *st;
  int rc = braid_http_static_create(path, &sto, &st);
  if (rc < 0) {
    fprintf(stderr, "braid web: cannot serve '%s': %s\n", path,
            braid_strerror(rc));
    return 1;
  }
  braid_reactor_t *r;
  braid_reactor_options ro = {0};
  ro.log_cb = web_log;
  rc = braid_reactor_create(&r, &ro);
  if (rc < 0) {
    fprintf(stderr, "braid: cannot create reactor: %s\n", braid_strerror(rc));
    braid_http_static_destroy(st);
    return 1;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  braid_http_server_t *srv = NULL;
  rc = braid_http_server_create(r, &so, &srv);
  if (rc == 0 && hello)
    rc = braid_http_route(srv, "GET", "/hello", web_hello, NULL);
  if (rc == 0 && echo)
    rc = braid_http_route(srv, "POST", "/echo", web_echo_h, NULL);
  if (rc == 0)
    rc = braid_http_route(srv, NULL, "/", braid_http_static_handler, st);
  int status = 0;
  if (rc < 0) {
    fprintf(stderr, "braid web: %s\n", braid_strerror(rc));
    status = 1;
  }
  for (int i = 0; status == 0 && i < nlisten; i++) {
    char err[256];
    rc = braid_http_server_listen(srv, listen[i], err, sizeof err);
    if (rc < 0) {
      fprintf(stderr, "braid web: %s\n", err);
      status = 1;
    }
  }
  if (status == 0 && !quiet) {
    braid_addr_t a;
    char buf[128];
    if (braid_http_server_addr(srv, &a) == 0 &&
        braid_addr_format(&a, buf, sizeof buf) > 0)
      printf("braid web: serving %s on %s%s (poller %s)\n", path,
             tls_cert != NULL ? "https://" : "", buf, braid_reactor_poller(r));
  }
  if (status == 0) {
    web_stop w = {r, srv};
    braid_signal_t sint = {0}, sterm = {0};
    braid_signal_start(r, &sint, SIGINT, web_on_signal, &w);
    braid_signal_start(r, &sterm, SIGTERM, web_on_signal, &w);
    rc = braid_reactor_run(r);
    if (rc < 0) {
      fprintf(stderr, "braid web: %s\n", braid_strerror(rc));
      status = 1;
    }
    braid_signal_stop(&sint);
    braid_signal_stop(&sterm);
  }
  /* The server first (it closes its listeners and connections), then the
   * reactor, which completes those closes. */
  braid_http_server_destroy(srv);
  braid_reactor_destroy(r);
  braid_http_static_destroy(st);
  return status;
}

#endif

static const char main_usage[] =
    "usage: braid COMMAND [OPTIONS]\n"
    "commands:\n"
    "  echo      an echo server (braid echo --help)\n"
#ifndef _WIN32
    "  web       serve a folder over HTTP (braid web --help)\n"
#endif
    "  version   print the library version\n";

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
      strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    fputs(main_usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "version") == 0) {
    printf("braid %s\n", braid_version());
    return 0;
  }
  if (strcmp(argv[1], "echo") == 0)
    return cmd_echo(argc - 2, argv + 2);
#ifndef _WIN32
  if (strcmp(argv[1], "web") == 0)
    return cmd_web(argc - 2, argv + 2);
#endif
  fprintf(stderr, "braid: unknown command '%s'\n%s", argv[1], main_usage);
  return 2;
}
