/* http_get URL: fetch a URL with braid's HTTP client and print the status
 * line and headers (on stderr) and the body (on stdout, as it arrives:
 * the streaming form of the client, so a large body is never held whole).
 * https:// URLs run over braid's TLS layer and verify the server's
 * certificate; a build without TLS (-Dtls=disabled, or no OpenSSL found)
 * fails them with BRAID_ENOTSUP.
 * Exit status 0 for a complete response, 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>

#include "braid/braid.h"

typedef struct state {
  braid_reactor_t *r;
  braid_http_client_t *c;
  int status;
} state;

static void on_body(braid_http_call_t *call, const void *data, size_t len,
                    void *user) {
  (void)call;
  (void)user;
  fwrite(data, 1, len, stdout);
}

static void on_end(braid_http_call_t *call, int status, void *user) {
  (void)call;
  state *s = user;
  if (status != 0) {
    fprintf(stderr, "body cut short: %s\n", braid_strerror(status));
    s->status = 1;
  }
  braid_reactor_stop(s->r);
}

static void on_head(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  const braid_http_client_response_t *resp = braid_result_value(res);
  fprintf(stderr, "HTTP/1.%d %d %.*s\n", resp->minor_version, resp->status,
          (int)resp->reason.len, resp->reason.ptr);
  for (size_t i = 0; i < resp->num_headers; i++)
    fprintf(stderr, "%.*s: %.*s\n", (int)resp->headers[i].name.len,
            resp->headers[i].name.ptr, (int)resp->headers[i].value.len,
            resp->headers[i].value.ptr);
  fprintf(stderr, "\n");
}

static void on_error(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  state *s = arg;
  char msg[256];
  braid_failure_format(braid_result_failure(res), msg, sizeof msg);
  /* Only a build without TLS refuses https with BRAID_ENOTSUP: say how to
   * get one rather than leave the user with "not supported". */
  fprintf(stderr, "request failed: %s%s\n", msg,
          braid_failure_code(braid_result_failure(res)) == BRAID_ENOTSUP
              ? " (https needs braid built with TLS: -Dtls=enabled)"
              : "");
  braid_result_set(res, NULL, NULL); /* handled */
  s->status = 1;
  braid_reactor_stop(s->r);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s http[s]://host[:port]/path\n", argv[0]);
    return 2;
  }
  state s = {0};
  if (braid_reactor_create(&s.r, NULL) < 0 ||
      braid_http_client_create(s.r, NULL, &s.c) < 0)
    return 1;
  braid_http_body_handlers h = {
      .body_data = on_body, .body_end = on_end, .user = &s};
  braid_http_request_options o = {0};
  o.url = argv[1];
  o.handlers = &h;
  braid_deferred_t d;
  int rc = braid_http_request_ex(s.c, &o, &d, NULL);
  if (rc < 0) {
    fprintf(stderr, "%s: %s\n", argv[1], braid_strerror(rc));
    s.status = 2;
  } else {
    braid_deferred_add_callbacks(d, on_head, &s, on_error, &s);
    braid_reactor_run(s.r);
  }
  braid_http_client_destroy(s.c);
  braid_reactor_destroy(s.r);
  return s.status;
}
