/* braid's HTTP server answering a 13-byte hello, run either by braid's own
 * loop or from inside a GLib main loop (braid_glib_source_new), for
 * comparing requests per second under the two hosts with wrk.
 *   bench_glib_web own|glib PORT */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/braid.h"
#include "braid/glib.h"
#include "braid/http.h"

static void hello(braid_http_req_t *req, void *arg) {
  (void)arg;
  braid_http_respond(req, 200, NULL, 0, "Hello, world!", 13);
}

int main(int argc, char **argv) {
  if (argc < 3 || (strcmp(argv[1], "own") != 0 && strcmp(argv[1], "glib") != 0)) {
    fprintf(stderr, "usage: %s own|glib PORT\n", argv[0]);
    return 2;
  }
  braid_reactor_t *r;
  braid_http_server_t *srv;
  braid_http_server_options so = {0};
  so.no_access_log = true;
  char ep[96], err[256];
  snprintf(ep, sizeof ep, "tcp:port=%s:interface=127.0.0.1", argv[2]);
  if (braid_reactor_create(&r, NULL) != 0 ||
      braid_http_server_create(r, &so, &srv) != 0 ||
      braid_http_route(srv, "GET", "/", hello, NULL) != 0 ||
      braid_http_server_listen(srv, ep, err, sizeof err) != 0) {
    fprintf(stderr, "bench_glib_web: cannot start: %s\n", err);
    return 1;
  }
  if (strcmp(argv[1], "own") == 0) {
    braid_reactor_run(r);
  } else {
    GMainLoop *loop = g_main_loop_new(NULL, FALSE);
    GSource *src = braid_glib_source_new(r);
    if (src == NULL)
      return 1;
    g_source_attach(src, NULL);
    g_main_loop_run(loop);
  }
  return 0;
}
