/* Echo server on libuv, written the way a libuv user who cares about speed
 * writes it, so that bench/run.py compares braid with libuv at its best.
 *
 * Why it is fast, i.e. what it avoids:
 * - No allocation per read: the alloc callback hands out one 64 KiB buffer
 *   owned by the loop (libuv calls read_cb before it asks for the next
 *   buffer, so one buffer per loop is enough).
 * - No write request in the common case: uv_try_write sends the bytes at
 *   once, with no write request, no queue and no second trip through the
 *   loop. Only what the kernel refuses is copied into a write request,
 *   and those requests come from a free list, so a steady state allocates
 *   nothing either.
 * - No Nagle delay: TCP_NODELAY on every accepted socket (the load
 *   generator sets it too), as every peer and braid's bench echo do.
 * Under callgrind (bench/callgrind.sh, 8 connections) this file runs 353-374
 * user-space instructions per echo round trip; written as libuv's examples
 * do (malloc per read, a write request per reply) it ran 1,232.
 * Memory stays bounded: a connection whose queued bytes pass 1 MiB stops
 * reading until its queue drains, as braid's echo pauses at its high-water
 * mark. Usage: echo_libuv PORT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define READ_BUF (64 * 1024)
#define HIGH_WATER (1024 * 1024)

typedef struct loop_data {
  char buf[READ_BUF];
  struct write_req *free_reqs;
} loop_data;

/* A queued write: the bytes the kernel did not take, copied because the
 * loop's read buffer is reused by the next read. */
typedef struct write_req {
  uv_write_t req;
  struct write_req *next_free;
  char *data;
  size_t cap;
} write_req;

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_close(uv_handle_t *h) {
  free(h);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  loop_data *ld = h->loop->data;
  buf->base = ld->buf;
  buf->len = sizeof ld->buf;
}

static void on_written(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  uv_stream_t *s = req->handle;
  loop_data *ld = s->loop->data;
  w->next_free = ld->free_reqs;
  ld->free_reqs = w;
  if (status < 0) {
    if (!uv_is_closing((uv_handle_t *)s))
      uv_close((uv_handle_t *)s, on_close);
    return;
  }
  /* s->data is non-NULL while reading is paused at the high-water mark. */
  if (s->data != NULL && uv_stream_get_write_queue_size(s) == 0 &&
      !uv_is_closing((uv_handle_t *)s)) {
    s->data = NULL;
    uv_read_start(s, on_alloc, on_read);
  }
}

static int queue_rest(uv_stream_t *s, const char *p, size_t n) {
  loop_data *ld = s->loop->data;
  write_req *w = ld->free_reqs;
  if (w != NULL) {
    ld->free_reqs = w->next_free;
  } else if ((w = calloc(1, sizeof *w)) == NULL) {
    return -1;
  }
  if (w->cap < n) {
    char *d = realloc(w->data, n);
    if (d == NULL) {
      w->next_free = ld->free_reqs;
      ld->free_reqs = w;
      return -1;
    }
    w->data = d;
    w->cap = n;
  }
  memcpy(w->data, p, n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  if (uv_write(&w->req, s, &b, 1, on_written) != 0) {
    w->next_free = ld->free_reqs;
    ld->free_reqs = w;
    return -1;
  }
  if (uv_stream_get_write_queue_size(s) > HIGH_WATER) {
    uv_read_stop(s);
    s->data = s;
  }
  return 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) {
    if (!uv_is_closing((uv_handle_t *)s))
      uv_close((uv_handle_t *)s, on_close);
    return;
  }
  if (n == 0)
    return; /* EAGAIN */
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
  /* uv_try_write refuses (UV_EAGAIN) while earlier writes are queued, so
   * the order of the bytes is kept. */
  int sent = uv_try_write(s, &b, 1);
  if (sent == UV_EAGAIN)
    sent = 0;
  if (sent < 0 ||
      (sent < n && queue_rest(s, buf->base + sent, (size_t)(n - sent)) < 0))
    uv_close((uv_handle_t *)s, on_close);
}

static void on_conn(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  uv_tcp_t *c = malloc(sizeof *c);
  if (c == NULL || uv_tcp_init(server->loop, c) != 0) {
    free(c);
    return;
  }
  c->data = NULL;
  if (uv_accept(server, (uv_stream_t *)c) == 0 && uv_tcp_nodelay(c, 1) == 0 &&
      uv_read_start((uv_stream_t *)c, on_alloc, on_read) == 0)
    return;
  uv_close((uv_handle_t *)c, on_close);
}

int main(int argc, char **argv) {
  static loop_data ld;
  uv_loop_t *loop = uv_default_loop();
  loop->data = &ld;
  uv_tcp_t server;
  struct sockaddr_in addr;
  uv_tcp_init(loop, &server);
  uv_ip4_addr("127.0.0.1", argc > 1 ? atoi(argv[1]) : 7000, &addr);
  if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&server, 511, on_conn) != 0) {
    fprintf(stderr, "echo_libuv: cannot listen\n");
    return 1;
  }
  return uv_run(loop, UV_RUN_DEFAULT);
}
