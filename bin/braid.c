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

static const char main_usage[] =
    "usage: braid COMMAND [OPTIONS]\n"
    "commands:\n"
    "  echo      an echo server (braid echo --help)\n"
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
  fprintf(stderr, "braid: unknown command '%s'\n%s", argv[1], main_usage);
  return 2;
}
