/* Echo server on libevent 2, written the fastest way libevent's API allows,
 * so that bench/run.py compares braid with libevent at its best.
 *
 * Why it is fast, i.e. what it avoids:
 * - No bufferevent: a bufferevent reads into an evbuffer chain, moving the
 *   input to the output buffer only arms a write event, and the bytes go
 *   out on the next loop iteration after an epoll_ctl to add EPOLLOUT and
 *   another to remove it, with an ioctl(FIONREAD) before each read: 7
 *   syscalls per round trip with one connection against 3 here, and 2,715
 *   user-space instructions per round trip under callgrind (8 connections,
 *   bench/callgrind.sh) against 366-374 for this file. Here a persistent
 *   read event reads into one static buffer and sends straight back.
 * - No allocation per read or write: only the bytes the kernel refuses are
 *   copied into the connection's pending buffer, and a write event is
 *   armed only then; the read event is stopped meanwhile so that memory
 *   stays bounded (at one read's worth per connection).
 * - No Nagle delay: TCP_NODELAY on every accepted socket, as every peer
 *   and braid's bench echo do.
 * - Events are allocated once per connection (event_new at accept), never
 *   per read.
 * Usage: echo_libevent PORT */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn {
  struct event *rd, *wr;
  char *pend;
  size_t npend, cap;
} conn;

static char buf[64 * 1024];

static void conn_free(conn *c) {
  evutil_socket_t fd = event_get_fd(c->rd);
  event_free(c->rd);
  event_free(c->wr);
  close(fd);
  free(c->pend);
  free(c);
}

static void on_writable(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  conn *c = arg;
  ssize_t n = send(fd, c->pend, c->npend, MSG_NOSIGNAL);
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR)
      conn_free(c);
    return;
  }
  memmove(c->pend, c->pend + n, c->npend - (size_t)n);
  c->npend -= (size_t)n;
  if (c->npend == 0) {
    event_del(c->wr);
    event_add(c->rd, NULL);
  }
}

static void on_readable(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  conn *c = arg;
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  if (n <= 0) {
    if (n == 0 || (errno != EAGAIN && errno != EINTR))
      conn_free(c);
    return;
  }
  ssize_t s = send(fd, buf, (size_t)n, MSG_NOSIGNAL);
  if (s < 0) {
    if (errno != EAGAIN && errno != EINTR) {
      conn_free(c);
      return;
    }
    s = 0;
  }
  if (s < n) { /* the kernel is full: keep the rest, stop reading */
    size_t rest = (size_t)(n - s);
    if (c->cap < rest) {
      char *p = realloc(c->pend, rest);
      if (p == NULL) {
        conn_free(c);
        return;
      }
      c->pend = p;
      c->cap = rest;
    }
    memcpy(c->pend, buf + s, rest);
    c->npend = rest;
    event_del(c->rd);
    event_add(c->wr, NULL);
  }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int len, void *arg) {
  (void)sa;
  (void)len;
  (void)arg;
  struct event_base *base = evconnlistener_get_base(l);
  conn *c = calloc(1, sizeof *c);
  int one = 1;
  if (c == NULL ||
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
      (c->rd = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, c)) ==
          NULL ||
      (c->wr = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, c)) ==
          NULL) {
    if (c != NULL && c->rd != NULL)
      event_free(c->rd);
    free(c);
    close(fd);
    return;
  }
  event_add(c->rd, NULL);
}

int main(int argc, char **argv) {
  /* No locks: this loop is used by one thread (libevent locks only when
   * evthread_use_pthreads() was called; the flag says so anyway). */
  struct event_config *cfg = event_config_new();
  event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
  struct event_base *base = event_base_new_with_config(cfg);
  event_config_free(cfg);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)(argc > 1 ? atoi(argv[1]) : 7000));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct evconnlistener *l = evconnlistener_new_bind(
      base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 511,
      (struct sockaddr *)&a, sizeof a);
  if (base == NULL || l == NULL) {
    fprintf(stderr, "echo_libevent: cannot listen\n");
    return 1;
  }
  return event_base_dispatch(base);
}
