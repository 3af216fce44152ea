/* HTTP "hello" server on libevent's evhttp, for bench/run.py: every
 * request gets the 13 bytes "Hello, world!" with keep-alive.
 * Usage: http_evhttp PORT */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>

static void hello(struct evhttp_request *req, void *arg) {
  (void)arg;
  struct evbuffer *b = evbuffer_new();
  evbuffer_add(b, "Hello, world!", 13);
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                    "text/plain");
  evhttp_send_reply(req, 200, "OK", b);
  evbuffer_free(b);
}

int main(int argc, char **argv) {
  struct event_base *base = event_base_new();
  struct evhttp *http = evhttp_new(base);
  evhttp_set_gencb(http, hello, NULL);
  if (evhttp_bind_socket(http, "127.0.0.1",
                         (unsigned short)(argc > 1 ? atoi(argv[1]) : 8080)) != 0) {
    fprintf(stderr, "http_evhttp: cannot listen\n");
    return 1;
  }
  return event_base_dispatch(base);
}
