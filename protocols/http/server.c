/* The HTTP/1.1 server object (braid/http.h): options, listeners, the
 * factory that builds connections, statistics, and its lifetime.
 *
 * A connection reads into its own buffer, parses one request head at a
 * time with braid_http_parse_request, copies the head into the request
 * (so the buffer can be reused for the body and the next request) and
 * calls the route's handler. The body is decoded from the same buffer as
 * the handler asks for it. Reading is paused whenever nobody wants the
 * bytes, so memory per connection stays at about one read plus one head.
 * Each connection is an explicit state machine with a timeout per state:
 * see the top of server_conn.c. */
#include <string.h>
#include <time.h>

#include "protocols/http/server_internal.h"

const char *braid__hs_date(braid_http_server_t *s) {
  int64_t now = (int64_t)time(NULL);
  if (now != s->date_sec) {
    s->date_sec = now;
    braid_http_date_format(now, s->date);
  }
  return s->date;
}

int braid_http_server_create(braid_reactor_t *r,
                             const braid_http_server_options *opts,
                             braid_http_server_t **out) {
  if (r == NULL || out == NULL)
    return BRAID_EINVAL;
  *out = NULL;
  braid_http_server_t *s = braid_calloc(1, sizeof *s);
  if (s == NULL)
    return BRAID_ENOMEM;
  s->r = r;
  if (opts != NULL)
    s->opts = *opts;
  /* Every state of a connection has a timeout (server_conn.c); these are
   * nginx's defaults where nginx has one, shorter where a silent peer
   * would otherwise hold a connection for a minute before it said
   * anything. */
  braid_http_server_options *o = &s->opts;
  if (o->header_timeout == 0)
    o->header_timeout = BRAID_SEC(10);
  if (o->idle_timeout == 0)
    o->idle_timeout = BRAID_SEC(60);
  if (o->body_timeout == 0)
    o->body_timeout = o->idle_timeout; /* as before the option existed */
  if (o->write_timeout == 0)
    o->write_timeout = BRAID_SEC(60); /* nginx's send_timeout */
  if (o->handler_timeout == 0)
    o->handler_timeout = BRAID_SEC(60); /* nginx's proxy_read_timeout */
  if (o->linger_timeout == 0)
    o->linger_timeout = BRAID_SEC(2);
  if (o->max_body == 0)
    o->max_body = 16u * 1024u * 1024u;
  s->server_name = braid__hs_strdup(o->server_name ? o->server_name : "braid");
  if (s->server_name == NULL || !braid__hs_field_ok(s->server_name) ||
      strlen(s->server_name) > 128) {
    int rc = s->server_name == NULL ? BRAID_ENOMEM : BRAID_EINVAL;
    braid_free(s->server_name);
    braid_free(s);
    return rc;
  }
  o->server_name = NULL;
  s->factory.build = braid__hs_conn_build;
  s->factory.user = s;
  s->date_sec = -1;
  *out = s;
  return 0;
}

braid_factory_t *braid_http_server_factory(braid_http_server_t *s) {
  return s != NULL ? &s->factory : NULL;
}

int braid_http_server_listen(braid_http_server_t *s, const char *endpoint,
                             char *err, size_t errlen) {
  if (s == NULL || endpoint == NULL || s->destroyed)
    return BRAID_EINVAL;
  if (s->nlisteners == HS_MAX_LISTENERS)
    return BRAID_ELIMIT;
  braid_listener_t *l;
  int rc = braid_endpoint_listen(s->r, endpoint, &s->factory, &l, err, errlen);
  if (rc < 0)
    return rc;
  s->listeners[s->nlisteners++] = l;
  return 0;
}

int braid_http_server_addr(const braid_http_server_t *s, braid_addr_t *out) {
  if (s == NULL || out == NULL || s->nlisteners == 0)
    return BRAID_EINVAL;
  return braid_listener_addr(s->listeners[0], out);
}

size_t braid_http_server_connections(const braid_http_server_t *s) {
  return s != NULL ? s->nconns : 0;
}

void braid_http_server_stats_get(const braid_http_server_t *s,
                                 braid_http_server_stats *out) {
  if (out == NULL)
    return;
  memset(out, 0, sizeof *out);
  if (s == NULL)
    return;
  out->connections = s->nconns;
  for (const hs_conn *c = s->conns; c != NULL; c = c->next) {
    out->input_buffered += c->cap;
    uint64_t q = c->t != NULL ? braid_transport_write_queued(c->t) : 0;
    out->output_queued += q;
    if (q > out->output_queued_max)
      out->output_queued_max = q;
  }
}

void braid__http_server_set_parse_probe(braid_http_server_t *s,
                                        braid__http_parse_probe_cb cb,
                                        void *arg) {
  s->probe = cb;
  s->probe_arg = arg;
}

void braid__http_server_set_state_probe(braid_http_server_t *s,
                                        braid__http_state_probe_cb cb,
                                        void *arg) {
  s->state_probe = cb;
  s->state_probe_arg = arg;
}

void braid__hs_server_maybe_free(braid_http_server_t *s) {
  if (!s->destroyed || s->nconns > 0)
    return;
  braid__hs_routes_free(s);
  braid_free(s->server_name);
  braid_free(s);
}

int braid_http_server_drain(braid_http_server_t *s) {
  if (s == NULL || s->destroyed)
    return BRAID_EINVAL;
  if (s->draining)
    return 0;
  s->draining = true;
  for (size_t i = 0; i < s->nlisteners; i++)
    braid_listener_close(s->listeners[i]);
  s->nlisteners = 0;
  /* Connections without a request in progress close now: idle ones, and
   * new ones no byte has come on yet (head state, empty buffer). Those
   * holding part of a head or a body to skip have a request in flight;
   * they close after its response (braid__hs_req_done), and any that
   * reaches the idle state closes then (braid__hs_settle). */
  for (hs_conn *c = s->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (braid__hs_live(c) && c->req == NULL && c->len == 0 && !c->body_pending)
      braid__hs_close(c);
  }
  return 0;
}

void braid_http_server_destroy(braid_http_server_t *s) {
  if (s == NULL || s->destroyed)
    return;
  s->destroyed = 1;
  for (size_t i = 0; i < s->nlisteners; i++)
    braid_listener_close(s->listeners[i]);
  s->nlisteners = 0;
  /* Whatever state each connection is in, it ends the same way: aborted,
   * its request told through `closed`, freed from connection_lost. */
  for (hs_conn *c = s->conns; c != NULL; c = c->next)
    braid__hs_abort(c, BRAID_ECONNABORTED);
  braid__hs_server_maybe_free(s);
}
