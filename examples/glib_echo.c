/* A GLib program (no GTK) that runs a braid TCP echo server on its own
 * GMainLoop, next to an ordinary GLib timeout that prints a heartbeat.
 * Usage: glib_echo [ENDPOINT] (default tcp:port=7002:interface=127.0.0.1);
 * try it with nc 127.0.0.1 7002. Ctrl-C stops it. */
#include <glib-unix.h>
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>

#include "braid/braid.h"
#include "braid/glib.h"

static void on_data(braid_protocol_t *p, const void *data, size_t len) {
  braid_transport_write(p->transport, data, len);
}
static void on_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  free(p);
}
static const braid_protocol_ops echo = {.data_received = on_data,
                                        .connection_lost = on_lost};
static braid_protocol_t *build(braid_factory_t *f, const braid_addr_t *peer) {
  (void)f;
  (void)peer;
  braid_protocol_t *p = calloc(1, sizeof *p);
  if (p != NULL)
    p->ops = &echo;
  return p;
}

static gboolean heartbeat(gpointer arg) {
  (void)arg;
  printf("glib_echo: GLib heartbeat\n");
  fflush(stdout);
  return G_SOURCE_CONTINUE;
}

static gboolean on_sigint(gpointer loop) {
  g_main_loop_quit(loop);
  return G_SOURCE_REMOVE;
}

int main(int argc, char **argv) {
  const char *desc = argc > 1 ? argv[1] : "tcp:port=7002:interface=127.0.0.1";
  braid_reactor_t *r;
  if (braid_reactor_create(&r, NULL) < 0)
    return 1;
  /* braid's work is one GSource among GLib's own. */
  GSource *src = braid_glib_source_new(r);
  if (src == NULL) {
    fprintf(stderr,
            "glib_echo: poller %s has no descriptor; use the "
            "thread-hosted mode (braid/embed.h)\n",
            braid_reactor_poller(r));
    braid_reactor_destroy(r);
    return 1;
  }
  GMainLoop *loop = g_main_loop_new(NULL, FALSE);
  g_source_attach(src, NULL);
  braid_factory_t f = {.build = build};
  braid_listener_t *l;
  char err[128];
  int rc = braid_endpoint_listen(r, desc, &f, &l, err, sizeof err);
  if (rc < 0) {
    fprintf(stderr, "glib_echo: %s: %s\n", desc, err);
  } else {
    printf("glib_echo: echoing on %s inside a GMainLoop\n", desc);
    g_timeout_add_seconds(5, heartbeat, NULL);
    g_unix_signal_add(2 /* SIGINT */, on_sigint, loop);
    g_main_loop_run(loop);
    braid_listener_close(l);
  }
  g_source_destroy(src);
  g_source_unref(src);
  g_main_loop_unref(loop);
  braid_reactor_destroy(r);
  return rc < 0;
}
