/* Name resolution on the thread pool, and connecting to a resolved name
 * (each address in turn until one answers). */
#include <stdio.h>
#include <string.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <netdb.h>
#include <sys/socket.h>
#endif

#include "braid/resolve.h"
#include "braid/threadpool.h"
#include "core/resolve_internal.h"
#include "core/transport.h"

typedef struct braid__lookup {
  char host[BRAID_ENDPOINT_HOST_MAX];
  uint16_t port;
  int family;
} braid__lookup;

static int braid__gai_error(int rc) {
  switch (rc) {
  case EAI_NONAME:
#if defined(EAI_NODATA) && EAI_NODATA != EAI_NONAME
  case EAI_NODATA:
#endif
    return BRAID_ENOTFOUND;
  case EAI_AGAIN:
    return BRAID_EAGAIN;
  case EAI_MEMORY:
    return BRAID_ENOMEM;
  case EAI_FAMILY:
    return BRAID_EAFNOSUPPORT;
  default:
    return BRAID_EUNKNOWN;
  }
}

/* On a worker thread: nothing here touches the reactor. */
static int braid__lookup_work(void *arg, void **value, braid_dtor_cb *dtor) {
  braid__lookup *l = arg;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = l->family;
  hints.ai_socktype = SOCK_STREAM;
  char port[8];
  snprintf(port, sizeof port, "%u", l->port);
  int rc = getaddrinfo(l->host, port, &hints, &res);
  if (rc != 0)
    return braid__gai_error(rc);
  size_t n = 0;
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
    if (ai->ai_addrlen <= sizeof(((braid_addr_t *)0)->sa_))
      n++;
  braid_addr_list_t *list =
      braid_calloc(1, sizeof *list + (n ? n : 1) * sizeof(braid_addr_t));
  if (list == NULL) {
    freeaddrinfo(res);
    return BRAID_ENOMEM;
  }
  for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(((braid_addr_t *)0)->sa_))
      continue;
    braid_addr_t *a = &list->addr[list->count++];
    memcpy(a->sa_.bytes, ai->ai_addr, ai->ai_addrlen);
    a->len_ = (uint32_t)ai->ai_addrlen;
  }
  freeaddrinfo(res);
  if (list->count == 0) {
    braid_free(list);
    return BRAID_ENOTFOUND;
  }
  *value = list;
  *dtor = braid_free;
  return 0;
}

int braid_resolve(braid_reactor_t *r, const char *host, uint16_t port,
                  int family, braid_deferred_t *out) {
  if (r == NULL || host == NULL || out == NULL ||
      (family != 0 && family != AF_INET && family != AF_INET6))
    return BRAID_EINVAL;
  *out = braid_deferred_none();
  size_t n = strlen(host);
  if (n == 0 || n >= BRAID_ENDPOINT_HOST_MAX)
    return BRAID_EINVAL;
  braid_addr_t numeric;
  if (braid_addr_ip(&numeric, host, port) == 0) {
    if (family != 0 && braid_addr_family(&numeric) != family)
      return braid_deferred_fail(r, braid_failure_from_code(r, BRAID_EAFNOSUPPORT), out);
    braid_addr_list_t *list = braid_malloc(sizeof *list + sizeof numeric);
    if (list == NULL)
      return BRAID_ENOMEM;
    list->count = 1;
    list->addr[0] = numeric;
    return braid_deferred_succeed(r, list, braid_free, out);
  }
  braid__lookup *l = braid_malloc(sizeof *l);
  if (l == NULL)
    return BRAID_ENOMEM;
  memcpy(l->host, host, n + 1);
  l->port = port;
  l->family = family;
  int rc = braid_defer_to_thread_ex(r, braid__lookup_work, l, braid_free, out);
  if (rc < 0)
    braid_free(l);
  return rc;
}

/* ------------------------------------------------------------------------
 * Connecting to a name: try each address until one connects. The user's
 * protocol sees one connection_made, or one connection_lost with the last
 * error; the connector steps out of the way once connected.
 * ------------------------------------------------------------------------ */

typedef struct braid__connector {
  braid_protocol_t inner;
  braid_protocol_t *user;
  braid_reactor_t *r;
  braid_addr_list_t *list;
  size_t next;
  int last_err;
  braid_connect_options opts;
} braid__connector;

static void braid__connector_free(braid__connector *c) {
  braid_free(c->list);
  braid_free(c);
}

static void braid__connector_give_up(braid__connector *c, int reason) {
  braid_protocol_t *user = c->user;
  braid__connector_free(c);
  if (user->ops->connection_lost != NULL)
    user->ops->connection_lost(user, reason);
}

static void braid__connector_try(braid__connector *c) {
  while (c->next < c->list->count) {
    int rc = braid_connect(c->r, &c->list->addr[c->next++], &c->opts,
                           &c->inner);
    if (rc == 0)
      return;
    c->last_err = rc;
  }
  braid__connector_give_up(c, c->last_err ? c->last_err : BRAID_ENOTFOUND);
}

static void braid__connector_made(braid_protocol_t *p, braid_transport_t *t) {
  braid__connector *c = braid__container_of(p, braid__connector, inner);
  braid_protocol_t *user = c->user;
  t->proto = user; /* from now on the transport talks to the user */
  user->transport = t;
  braid__connector_free(c);
  if (user->ops->connection_made != NULL)
    user->ops->connection_made(user, t);
}

static void braid__connector_lost(braid_protocol_t *p, int reason) {
  /* Only before connection_made: this address did not answer. */
  braid__connector *c = braid__container_of(p, braid__connector, inner);
  c->last_err = reason;
  braid__connector_try(c);
}

static const braid_protocol_ops braid__connector_ops = {
    .connection_made = braid__connector_made,
    .connection_lost = braid__connector_lost,
};

static void braid__connector_resolved(braid_deferred_t d, braid_result_t *res,
                                      void *arg) {
  (void)d;
  braid__connector *c = arg;
  braid_dtor_cb dtor;
  c->list = braid_result_take(res, &dtor);
  braid__connector_try(c);
}

static void braid__connector_failed(braid_deferred_t d, braid_result_t *res,
                                    void *arg) {
  (void)d;
  braid__connector *c = arg;
  int code = braid_failure_code(braid_result_failure(res));
  braid_result_set(res, NULL, NULL); /* handled */
  braid__connector_give_up(c, code < 0 ? code : BRAID_EUNKNOWN);
}

int braid__connect_name(braid_reactor_t *r, const char *host, uint16_t port,
                        int family, const braid_connect_options *opts,
                        braid_protocol_t *p) {
  braid__connector *c = braid_calloc(1, sizeof *c);
  if (c == NULL)
    return BRAID_ENOMEM;
  c->inner.ops = &braid__connector_ops;
  c->user = p;
  c->r = r;
  if (opts != NULL)
    c->opts = *opts;
  braid_deferred_t d;
  int rc = braid_resolve(r, host, port, family, &d);
  if (rc < 0) {
    braid_free(c);
    return rc;
  }
  return braid_deferred_add_callbacks(d, braid__connector_resolved, c,
                                      braid__connector_failed, c);
}
