/* A neutral echo load generator (plain epoll, no reactor library), used
 * against every echo server in bench/run-echo.sh.
 *
 *   echo_load pingpong PORT CONNS MSGSIZE SECONDS   round trips per second
 *   echo_load count PORT CONNS MSGSIZE ROUNDTRIPS   a fixed amount of work
 *   echo_load stream PORT BLOCK SECONDS             one connection, MB/s
 *   echo_load idle PORT CONNS HOLD_SECONDS          open CONNS and hold them
 *   echo_load http PORT CONNS PATH REQUESTS         keep-alive GETs, one in
 *                                                   flight per connection
 *
 * Prints one line of key=value pairs. Every echoed byte is checked; every
 * HTTP response must be a 200 with a Content-Length, and is read whole.
 * The http mode makes a fixed amount of work for bench/callgrind.sh, where
 * wrk (which runs for a time, not a count) cannot. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct conn {
  int fd;
  size_t got; /* bytes of the current echo received */
} conn;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int dial(int port, int nonblock) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    perror("socket");
    exit(1);
  }
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    perror("connect");
    exit(1);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (nonblock)
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static void send_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      perror("send");
      exit(1);
    }
    buf += n;
    len -= (size_t)n;
  }
}

/* Ping-pong on `nconns` connections until `seconds` pass or `limit` round
 * trips are done. */
static int pingpong(int port, int nconns, size_t msg, double seconds,
                    uint64_t limit) {
  char *out = malloc(msg), *in = malloc(msg);
  for (size_t i = 0; i < msg; i++)
    out[i] = (char)('a' + i % 26);
  conn *cs = calloc((size_t)nconns, sizeof *cs);
  int ep = epoll_create1(0);
  for (int i = 0; i < nconns; i++) {
    cs[i].fd = dial(port, 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  uint64_t rt = 0, started = 0;
  double t0 = now_s(), deadline = t0 + seconds;
  for (int i = 0; i < nconns && (limit == 0 || started < limit); i++) {
    send_all(cs[i].fd, out, msg);
    started++;
  }
  struct epoll_event evs[256];
  while (rt < started) {
    int n = epoll_wait(ep, evs, 256, 1000);
    for (int k = 0; k < n; k++) {
      conn *c = evs[k].data.ptr;
      ssize_t r = recv(c->fd, in + c->got, msg - c->got, 0);
      if (r <= 0) {
        fprintf(stderr, "echo_load: server closed or failed\n");
        return 1;
      }
      if (memcmp(in + c->got, out + c->got, (size_t)r) != 0) {
        fprintf(stderr, "echo_load: wrong bytes echoed\n");
        return 1;
      }
      c->got += (size_t)r;
      if (c->got < msg)
        continue;
      c->got = 0;
      rt++;
      int more = limit ? started < limit : now_s() < deadline;
      if (more) {
        send_all(c->fd, out, msg);
        started++;
      }
    }
  }
  double dt = now_s() - t0;
  printf("mode=pingpong conns=%d msg=%zu roundtrips=%llu seconds=%.3f "
         "rt_per_s=%.0f\n",
         nconns, msg, (unsigned long long)rt, dt, rt / dt);
  for (int i = 0; i < nconns; i++)
    close(cs[i].fd);
  return 0;
}

/* One connection: write blocks as fast as the server echoes them. */
static int stream(int port, size_t block, double seconds) {
  int fd = dial(port, 1);
  char *out = malloc(block), *in = malloc(1 << 16);
  for (size_t i = 0; i < block; i++)
    out[i] = (char)(i * 7);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = fd};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  uint64_t sent = 0, recvd = 0;
  double t0 = now_s(), deadline = t0 + seconds;
  int sending = 1;
  while (sending || recvd < sent) {
    if (sending && now_s() >= deadline) {
      sending = 0;
      shutdown(fd, SHUT_WR);
    }
    struct epoll_event e;
    if (epoll_wait(ep, &e, 1, 100) <= 0)
      continue;
    if ((e.events & EPOLLOUT) && sending) {
      size_t off = sent % block;
      ssize_t n = send(fd, out + off, block - off, MSG_NOSIGNAL);
      if (n > 0)
        sent += (uint64_t)n;
    }
    if (e.events & EPOLLIN) {
      for (;;) {
        ssize_t n = recv(fd, in, 1 << 16, 0);
        if (n <= 0)
          break;
        for (ssize_t i = 0; i < n; i++)
          if (in[i] != out[(recvd + (uint64_t)i) % block]) {
            fprintf(stderr, "echo_load: wrong byte in stream\n");
            return 1;
          }
        recvd += (uint64_t)n;
      }
    }
  }
  double dt = now_s() - t0;
  printf("mode=stream block=%zu bytes=%llu seconds=%.3f mb_per_s=%.1f\n", block,
         (unsigned long long)recvd, dt, recvd / dt / 1e6);
  return 0;
}

static int idle(int port, int nconns, double hold) {
  int *fds = malloc(sizeof(int) * (size_t)nconns);
  for (int i = 0; i < nconns; i++)
    fds[i] = dial(port, 0);
  /* One round trip on the last connection: the server has accepted all. */
  char b = 'x';
  send_all(fds[nconns - 1], &b, 1);
  if (recv(fds[nconns - 1], &b, 1, 0) != 1)
    return 1;
  printf("mode=idle conns=%d ready=1\n", nconns);
  fflush(stdout);
  struct timespec ts = {(time_t)hold, 0};
  nanosleep(&ts, NULL);
  for (int i = 0; i < nconns; i++)
    close(fds[i]);
  return 0;
}

/* The length of a response head ending in CRLF CRLF within buf[0..n), or 0
 * while incomplete; *clen gets its Content-Length (-1 if none). */
static size_t http_head(const char *buf, size_t n, long *clen) {
  const char *end = NULL;
  for (size_t i = 3; i < n; i++)
    if (memcmp(buf + i - 3, "\r\n\r\n", 4) == 0) {
      end = buf + i + 1;
      break;
    }
  if (end == NULL)
    return 0;
  *clen = -1;
  for (const char *p = buf; p < end; p++) {
    if (*p == '\n' && end - p > 16 &&
        strncasecmp(p + 1, "content-length:", 15) == 0) {
      *clen = strtol(p + 16, NULL, 10);
      break;
    }
  }
  return (size_t)(end - buf);
}

typedef struct hconn {
  int fd;
  size_t got;
  char buf[16384];
} hconn;

static int http(int port, int nconns, const char *path, uint64_t limit) {
  char req[512];
  int reqlen =
      snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
               path, port);
  if (reqlen <= 0 || (size_t)reqlen >= sizeof req) {
    fprintf(stderr, "echo_load: path too long\n");
    return 2;
  }
  hconn *cs = calloc((size_t)nconns, sizeof *cs);
  int ep = epoll_create1(0);
  for (int i = 0; i < nconns; i++) {
    cs[i].fd = dial(port, 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  uint64_t done = 0, started = 0, body_bytes = 0;
  double t0 = now_s();
  for (int i = 0; i < nconns && started < limit; i++) {
    send_all(cs[i].fd, req, (size_t)reqlen);
    started++;
  }
  struct epoll_event evs[256];
  while (done < started) {
    /* Bounded: a server that stops answering for 60 s fails the run. */
    int n = epoll_wait(ep, evs, 256, 60000);
    if (n <= 0) {
      fprintf(stderr, "echo_load: no answer for 60 s\n");
      return 1;
    }
    for (int k = 0; k < n; k++) {
      hconn *c = evs[k].data.ptr;
      ssize_t r = recv(c->fd, c->buf + c->got, sizeof c->buf - c->got, 0);
      if (r <= 0) {
        fprintf(stderr, "echo_load: server closed or failed\n");
        return 1;
      }
      c->got += (size_t)r;
      long clen;
      size_t head = http_head(c->buf, c->got, &clen);
      if (head == 0) {
        if (c->got == sizeof c->buf) {
          fprintf(stderr, "echo_load: response head too long\n");
          return 1;
        }
        continue;
      }
      if (strncmp(c->buf, "HTTP/1.1 200 ", 13) != 0 || clen < 0 ||
          head + (size_t)clen > sizeof c->buf) {
        fprintf(stderr,
                "echo_load: not a 200 with a small Content-Length: "
                "%.40s\n",
                c->buf);
        return 1;
      }
      if (c->got < head + (size_t)clen)
        continue;
      if (c->got > head + (size_t)clen) {
        fprintf(stderr, "echo_load: bytes after the response\n");
        return 1;
      }
      body_bytes += (uint64_t)clen;
      c->got = 0;
      done++;
      if (started < limit) {
        send_all(c->fd, req, (size_t)reqlen);
        started++;
      }
    }
  }
  double dt = now_s() - t0;
  printf("mode=http conns=%d requests=%llu body_bytes=%llu seconds=%.3f "
         "req_per_s=%.0f\n",
         nconns, (unsigned long long)done, (unsigned long long)body_bytes, dt,
         done / dt);
  for (int i = 0; i < nconns; i++)
    close(cs[i].fd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 6 && strcmp(argv[1], "pingpong") == 0)
    return pingpong(atoi(argv[2]), atoi(argv[3]), (size_t)atoi(argv[4]),
                    atof(argv[5]), 0);
  if (argc >= 6 && strcmp(argv[1], "count") == 0)
    return pingpong(atoi(argv[2]), atoi(argv[3]), (size_t)atoi(argv[4]), 1e9,
                    strtoull(argv[5], NULL, 10));
  if (argc >= 5 && strcmp(argv[1], "stream") == 0)
    return stream(atoi(argv[2]), (size_t)atoi(argv[3]), atof(argv[4]));
  if (argc >= 6 && strcmp(argv[1], "http") == 0)
    return http(atoi(argv[2]), atoi(argv[3]), argv[4],
                strtoull(argv[5], NULL, 10));
  if (argc >= 5 && strcmp(argv[1], "idle") == 0)
    return idle(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
  fprintf(stderr, "usage: see the top of bench/echo_load.c\n");
  return 2;
}
