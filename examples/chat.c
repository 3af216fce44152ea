/* A line-based chat server: every line a client sends goes to all the
 * other clients. Usage: chat [ENDPOINT] (default tcp:7001); then connect
 * with telnet or nc -C (lines end with "\r\n"). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include "braid/braid.h"

typedef struct chat_client chat_client;
typedef struct chat_server {
  braid_factory_t factory;
  chat_client *clients; /* every connected client */
} chat_server;

struct chat_client {
  braid_line_receiver_t lr; /* first: a chat_client is its receiver */
  chat_server *srv;
  chat_client *next, **prevp;
};

static void chat_made(braid_line_receiver_t *lr) {
  chat_client *c = (chat_client *)lr, **head = &c->srv->clients;
  c->next = *head;
  c->prevp = head;
  if (*head != NULL)
    (*head)->prevp = &c->next;
  *head = c;
}

static void chat_line(braid_line_receiver_t *lr, const char *line, size_t len) {
  chat_client *from = (chat_client *)lr;
  for (chat_client *c = from->srv->clients; c != NULL; c = c->next)
    if (c != from)
      braid_line_receiver_send_line(&c->lr, line, len);
}

/* A client that reads slower than the others talk would make its write
 * queue grow without bound: drop it instead. */
static void chat_slow(braid_line_receiver_t *lr) {
  braid_transport_abort(braid_line_receiver_transport(lr));
}

static void chat_lost(braid_line_receiver_t *lr, int reason) {
  chat_client *c = (chat_client *)lr;
  (void)reason;
  if (c->prevp != NULL) { /* connection_made ran */
    *c->prevp = c->next;
    if (c->next != NULL)
      c->next->prevp = c->prevp;
  }
  free(c);
}

static const braid_line_receiver_ops chat_ops = {
    .connection_made = chat_made,
    .line_received = chat_line,
    .connection_lost = chat_lost,
    .pause_writing = chat_slow,
};

static braid_protocol_t *chat_build(braid_factory_t *f,
                                    const braid_addr_t *peer) {
  (void)peer;
  chat_client *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  braid_line_receiver_init(&c->lr, &chat_ops, NULL);
  braid_line_receiver_set_max_length(&c->lr, 1024);
  c->srv = (chat_server *)f; /* the factory is the server's first member */
  return &c->lr.proto;
}

#ifndef CHAT_NO_MAIN
static void on_signal(braid_signal_t *s, int signo, unsigned n, void *arg) {
  (void)s, (void)signo, (void)n, braid_reactor_stop(arg);
}

int main(int argc, char **argv) {
  chat_server srv = {{chat_build, NULL}, NULL};
  braid_reactor_t *r;
  braid_listener_t *l;
  char err[256];
  if (braid_reactor_create(&r, NULL) < 0)
    return 1;
  if (braid_endpoint_listen(r, argc > 1 ? argv[1] : "tcp:7001", &srv.factory,
                            &l, err, sizeof err) < 0) {
    fprintf(stderr, "chat: %s\n", err);
    braid_reactor_destroy(r);
    return 1;
  }
  braid_signal_t sig = {0};
  braid_signal_start(r, &sig, SIGINT, on_signal, r);
  braid_reactor_run(r);
  braid_signal_stop(&sig);
  braid_reactor_destroy(r); /* closes the listener and every client */
  return 0;
}
#endif
