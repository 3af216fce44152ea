/* A minimal echo load client: N connections, each sending one SIZE-byte
 * message and waiting for its echo before sending the next (ping-pong),
 * for SECONDS; prints round trips per second. One thread, poll(2), plain
 * sockets, so that it measures the server rather than itself.
 *
 *   bench_echo_client PORT [CONNS=50] [SIZE=64] [SECONDS=5]
 *
 * Loopback only (127.0.0.1). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXC 1024

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT [CONNS] [SIZE] [SECONDS]\n", argv[0]);
    return 2;
  }
  int port = atoi(argv[1]);
  int n = argc > 2 ? atoi(argv[2]) : 50;
  size_t size = argc > 3 ? (size_t)atoi(argv[3]) : 64;
  double secs = argc > 4 ? atof(argv[4]) : 5;
  if (n < 1 || n > MAXC || size < 1 || size > 65536)
    return 2;
  static struct pollfd pfd[MAXC];
  static size_t got[MAXC];
  char *msg = malloc(size), *buf = malloc(65536);
  memset(msg, 'x', size);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < n; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
      perror("connect");
      return 1;
    }
    pfd[i].fd = fd;
    pfd[i].events = POLLIN;
    if (write(fd, msg, size) != (ssize_t)size) {
      perror("write");
      return 1;
    }
  }
  unsigned long trips = 0;
  double t0 = now_s(), end = t0 + secs;
  while (now_s() < end) {
    int k = poll(pfd, (nfds_t)n, 1000);
    if (k < 0 && errno != EINTR) {
      perror("poll");
      return 1;
    }
    for (int i = 0; i < n && k > 0; i++) {
      if (!pfd[i].revents)
        continue;
      k--;
      ssize_t r = read(pfd[i].fd, buf, 65536);
      if (r <= 0) {
        fprintf(stderr, "connection %d closed\n", i);
        return 1;
      }
      got[i] += (size_t)r;
      if (got[i] >= size) {
        got[i] -= size;
        trips++;
        if (write(pfd[i].fd, msg, size) != (ssize_t)size)
          return 1;
      }
    }
  }
  double dt = now_s() - t0;
  printf("%d conns, %zu-byte messages: %lu round trips in %.2f s = %.0f/s\n", n,
         size, trips, dt, (double)trips / dt);
  for (int i = 0; i < n; i++)
    close(pfd[i].fd);
  free(msg);
  free(buf);
  return 0;
}
