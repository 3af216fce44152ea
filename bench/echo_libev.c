/* Echo server on libev, written the fastest way libev's API allows, so that
 * bench/run.py compares braid with libev at its best.
 *
 * Why it is fast, i.e. what it avoids:
 * - No allocation per read or write: ev_io watchers over non-blocking
 *   sockets, reads into one static buffer, and the reply is sent straight
 *   back from it (a try-write first). Only the bytes the kernel refuses
 *   are copied into the connection's pending buffer, and only then is a
 *   write watcher started, with the read watcher stopped meanwhile so that
 *   memory stays bounded (libev leaves buffering to the application).
 * - No Nagle delay: TCP_NODELAY on every accepted socket, as every peer
 *   and braid's bench echo do.
 * - Watchers are embedded in the connection, so accepting costs one
 *   allocation, and accept4 makes the socket non-blocking in the same call.
 * Usage: echo_libev PORT */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct client {
  ev_io r, w;
  char *pend;
  size_t npend, cap;
} client;

static char buf[64 * 1024];

static void client_free(struct ev_loop *loop, client *c) {
  ev_io_stop(loop, &c->r);
  ev_io_stop(loop, &c->w);
  close(c->r.fd);
  free(c->pend);
  free(c);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  client *c = (client *)((char *)w - offsetof(client, w));
  ssize_t n = send(w->fd, c->pend, c->npend, MSG_NOSIGNAL);
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR)
      client_free(loop, c);
    return;
  }
  if (n > 0) {
    memmove(c->pend, c->pend + n, c->npend - (size_t)n);
    c->npend -= (size_t)n;
  }
  if (c->npend == 0) {
    ev_io_stop(loop, &c->w);
    ev_io_start(loop, &c->r);
  }
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  client *c = (client *)w;
  ssize_t n = recv(w->fd, buf, sizeof buf, 0);
  if (n <= 0) {
    if (n == 0 || (errno != EAGAIN && errno != EINTR))
      client_free(loop, c);
    return;
  }
  ssize_t s = send(w->fd, buf, (size_t)n, MSG_NOSIGNAL);
  if (s < 0) {
    if (errno != EAGAIN && errno != EINTR) {
      client_free(loop, c);
      return;
    }
    s = 0;
  }
  if (s < n) { /* the kernel is full: keep the rest, stop reading */
    size_t rest = (size_t)(n - s);
    if (c->cap < rest) {
      char *p = realloc(c->pend, rest);
      if (p == NULL) {
        client_free(loop, c);
        return;
      }
      c->pend = p;
      c->cap = rest;
    }
    memcpy(c->pend, buf + s, rest);
    c->npend = rest;
    ev_io_stop(loop, &c->r);
    ev_io_start(loop, &c->w);
  }
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents) {
  (void)revents;
  for (;;) {
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
      return;
    client *c = calloc(1, sizeof *c);
    int one = 1;
    if (c == NULL ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
      free(c);
      close(fd);
      continue;
    }
    ev_io_init(&c->r, on_readable, fd, EV_READ);
    ev_io_init(&c->w, on_writable, fd, EV_WRITE);
    ev_io_start(loop, &c->r);
  }
}

int main(int argc, char **argv) {
  struct ev_loop *loop = EV_DEFAULT;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)(argc > 1 ? atoi(argv[1]) : 7000));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 511) < 0) {
    perror("echo_libev");
    return 1;
  }
  ev_io lw;
  ev_io_init(&lw, on_accept, fd, EV_READ);
  ev_io_start(loop, &lw);
  ev_run(loop, 0);
  return 0;
}
