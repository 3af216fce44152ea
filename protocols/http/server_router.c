/* The HTTP server's routes: longest prefix at a segment boundary, then
 * the method (braid/http.h), and the dispatch of a parsed request to its
 * handler or to the error that answers it. */
#include <stdio.h>
#include <string.h>

#include "protocols/http/server_internal.h"

int braid_http_route(braid_http_server_t *s, const char *method,
                     const char *prefix, braid_http_handler_cb cb, void *arg) {
  if (s == NULL || prefix == NULL || prefix[0] != '/' || cb == NULL)
    return BRAID_EINVAL;
  for (size_t i = 0; i < s->nroutes; i++) {
    hs_route *rt = &s->routes[i];
    if (strcmp(rt->prefix, prefix) == 0 &&
        ((rt->method == NULL && method == NULL) ||
         (rt->method != NULL && method != NULL &&
          strcmp(rt->method, method) == 0)))
      return BRAID_EEXIST;
  }
  if (s->nroutes == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    hs_route *n = braid_realloc(s->routes, cap * sizeof *n);
    if (n == NULL)
      return BRAID_ENOMEM;
    s->routes = n;
    s->cap = cap;
  }
  hs_route *rt = &s->routes[s->nroutes];
  rt->method = method ? braid__hs_strdup(method) : NULL;
  rt->prefix = braid__hs_strdup(prefix);
  if ((method != NULL && rt->method == NULL) || rt->prefix == NULL) {
    braid_free(rt->method);
    braid_free(rt->prefix);
    return BRAID_ENOMEM;
  }
  rt->plen = strlen(prefix);
  rt->cb = cb;
  rt->arg = arg;
  s->nroutes++;
  return 0;
}

void braid__hs_routes_free(braid_http_server_t *s) {
  for (size_t i = 0; i < s->nroutes; i++) {
    braid_free(s->routes[i].method);
    braid_free(s->routes[i].prefix);
  }
  braid_free(s->routes);
  s->routes = NULL;
  s->nroutes = s->cap = 0;
}

/* Longest prefix wins; see braid/http.h. Returns 0 or the status to
 * answer with (404, 405). */
static int route_find(braid_http_server_t *s, braid_http_req_t *q,
                      hs_route **out) {
  hs_route *best = NULL;
  size_t best_len = 0;
  int path_matched = 0;
  const char *path = q->path;
  size_t len = strlen(path);
  for (size_t i = 0; i < s->nroutes; i++) {
    hs_route *rt = &s->routes[i];
    if (rt->plen > len || memcmp(path, rt->prefix, rt->plen) != 0)
      continue;
    if (rt->prefix[rt->plen - 1] != '/' && path[rt->plen] != '\0' &&
        path[rt->plen] != '/')
      continue;
    path_matched = 1;
    if (rt->method != NULL &&
        (strlen(rt->method) != q->method.len ||
         memcmp(rt->method, q->method.ptr, q->method.len) != 0)) {
      /* A GET route also answers HEAD, as every server does. */
      if (!(q->is_head && strcmp(rt->method, "GET") == 0))
        continue;
    }
    if (best == NULL || rt->plen > best_len ||
        (rt->plen == best_len && best->method == NULL && rt->method != NULL)) {
      best = rt;
      best_len = rt->plen;
    }
  }
  *out = best;
  if (best == NULL)
    return path_matched ? 405 : 404;
  q->rest = path + best_len;
  if (best->prefix[best_len - 1] == '/')
    q->rest = path + best_len - 1;
  return 0;
}

/* The connection is in the handler state with c->req == q: call the
 * route's handler, or answer for it. */
void braid__hs_dispatch(hs_conn *c, braid_http_req_t *q) {
  braid_http_server_t *s = c->srv;
  hs_route *rt = NULL;
  int st = braid__hs_req_path(q);
  if (st == 0 && strcmp(q->path, "*") == 0) {
    /* "OPTIONS *" asks about the server as a whole (RFC 9110 section
     * 9.3.7); "*" is no target for any other method. */
    if (q->method.len == 7 && memcmp(q->method.ptr, "OPTIONS", 7) == 0)
      braid_http_respond(q, 204, NULL, 0, NULL, 0);
    else {
      q->close_after = true;
      braid_http_respond(q, 400, NULL, 0, NULL, 0);
    }
    return;
  }
  if (st == 0)
    st = route_find(s, q, &rt);
  if (st != 0) {
    braid_http_field_t f[2] = {{"Content-Type", "text/plain; charset=utf-8"},
                               {"Allow", "GET, HEAD"}};
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", st, braid_http_reason(st));
    if (st >= 500 || st == 400)
      q->close_after = true;
    braid_http_respond(q, st, f, st == 405 ? 2 : 1, body, (size_t)n);
    return;
  }
  rt->cb(q, rt->arg);
}
