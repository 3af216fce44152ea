/* The service tree (braid/service.h), on public API only.
 *
 * Every stop is counted the same way whatever the kind: `pending` holds
 * one unit for the stop being set up plus one per part still stopping (a
 * child, a listener's connections, a client's connection, a custom
 * service's deferred); when it falls to zero the service is stopped and
 * its stop deferreds fire. Callbacks that may run after the caller let go
 * of a service (a child's deferred, a timer) hold a reference, so that
 * destroying the tree while it stops never leaves them a dangling
 * pointer. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "braid/alloc.h"
#include "braid/endpoint.h"
#include "braid/service.h"
#include "core/internal.h"

enum { SVC_GROUP, SVC_LISTENER, SVC_CLIENT, SVC_CUSTOM };
enum { SVC_STOPPED, SVC_RUNNING, SVC_STOPPING };

struct braid_service {
  braid_reactor_t *r;
  int kind;
  int state;
  char *name;
  braid_service_t *parent;
  braid_service_t *first, *last; /* children (groups) */
  braid_service_t *prev, *next;  /* siblings */
  unsigned refs;
  uint8_t doomed;
  uint8_t starting;        /* started by the group start in progress */
  braid_deferred_t *stops; /* fire when stopped; referenced */
  size_t nstops, capstops;
  size_t pending;
  uint64_t aborted;
  /* listener */
  char *endpoint;
  braid_factory_t *pf; /* the policy factory around the user's */
  braid_listener_t *l;
  braid_timer_t deadline;
  braid_policy_visit_cb drain;
  void *drain_arg;
  /* client */
  braid_client_service_t *cs;
  /* custom */
  braid_service_ops ops;
  void *arg;
};

static char *braid__svc_strdup(const char *s) {
  if (s == NULL)
    return NULL;
  size_t n = strlen(s) + 1;
  char *c = braid_malloc(n);
  if (c != NULL)
    memcpy(c, s, n);
  return c;
}

static int braid__svc_new(braid_reactor_t *r, const char *name, int kind,
                          braid_service_t **out) {
  if (out != NULL)
    *out = NULL;
  if (r == NULL || out == NULL)
    return BRAID_EINVAL;
  braid_service_t *s = braid_calloc(1, sizeof *s);
  if (s == NULL)
    return BRAID_ENOMEM;
  if (name != NULL && (s->name = braid__svc_strdup(name)) == NULL) {
    braid_free(s);
    return BRAID_ENOMEM;
  }
  s->r = r;
  s->kind = kind;
  s->refs = 1; /* the owner's */
  *out = s;
  return 0;
}

static void braid__svc_ref(braid_service_t *s) {
  s->refs++;
}

static void braid__svc_unref(braid_service_t *s) {
  if (--s->refs > 0)
    return;
  braid_free(s->stops);
  braid_free(s->endpoint);
  braid_free(s->name);
  braid_free(s);
}

static void braid__svc_err(char *err, size_t errlen, const char *fmt, ...)
#if defined(__MINGW32__) && !defined(__clang__)
    __attribute__((format(gnu_printf, 3, 4)))
#elif defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void braid__svc_err(char *err, size_t errlen, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ------------------------------------------------------------------------
 * Stopping: the common part
 * ------------------------------------------------------------------------ */

static void braid__svc_fire_stops(braid_service_t *s, int code) {
  braid_deferred_t *list = s->stops;
  size_t n = s->nstops;
  s->stops = NULL;
  s->nstops = s->capstops = 0;
  for (size_t i = 0; i < n; i++) {
    if (code == 0)
      braid_deferred_callback(list[i], NULL, NULL);
    else
      braid_deferred_errback(list[i], braid_failure_from_code(s->r, code));
    braid_deferred_unref(list[i]);
  }
  braid_free(list);
}

/* One part of a stop is over. */
static void braid__svc_part_done(braid_service_t *s) {
  if (--s->pending > 0 || s->doomed)
    return;
  s->state = SVC_STOPPED;
  /* Everything ended before the deadline: a restarted listener must not
   * have its new connections aborted by the old stop. */
  if (s->kind == SVC_LISTENER && braid_timer_active(&s->deadline))
    braid_timer_cancel(&s->deadline);
  braid__svc_ref(s); /* the deferreds' callbacks may destroy the tree */
  braid__svc_fire_stops(s, 0);
  braid__svc_unref(s);
}

/* A part's deferred fired: a value or a failure both mean "stopped". */
static void braid__svc_part_cb(braid_deferred_t d, braid_result_t *res,
                               void *arg) {
  (void)d;
  braid_service_t *s = arg;
  braid_failure_t *f = braid_result_failure(res);
  if (f != NULL) {
    if (!braid_failure_check(f, NULL, BRAID_ECANCELED)) {
      char buf[256];
      braid_failure_format(f, buf, sizeof buf);
      braid_reactor_log(s->r, BRAID_LOG_WARN, "service",
                        "service '%s' stopped with an error: %s",
                        s->name != NULL ? s->name : "", buf);
    }
    braid_result_set(res, NULL, NULL); /* handled */
  }
  braid__svc_part_done(s);
  braid__svc_unref(s);
}

/* Wait for `d` (may be none: nothing to wait for) as one part. The step
 * is added in the turn `d` was handed over in, so no reference is needed:
 * a deferred that has fired runs the step at once, and one that has not is
 * never freed before it fires. */
static void braid__svc_wait(braid_service_t *s, braid_deferred_t d) {
  if (braid_deferred_is_none(d))
    return;
  s->pending++;
  braid__svc_ref(s);
  if (braid_deferred_add_both(d, braid__svc_part_cb, s) < 0) {
    /* Out of memory for one step: do not hang the stop on it. */
    s->pending--;
    braid__svc_unref(s);
  }
}

static void braid__abort_visit(braid_protocol_t *p, braid_transport_t *t,
                               void *arg) {
  (void)p;
  braid_service_t *s = arg;
  if (braid_transport_abort(t) == 0)
    s->aborted++;
}

static void braid__svc_deadline_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid_service_t *s = arg;
  if (s->pf != NULL)
    braid_policy_factory_each(s->pf, braid__abort_visit, s);
}

/* The kind-specific part of a stop; adds parts to s->pending. */
static void braid__svc_stop_parts(braid_service_t *s, uint64_t grace) {
  switch (s->kind) {
  case SVC_GROUP:
    /* All at once, asked in reverse order (Twisted's MultiService). A
     * child that completes at once fires its deferreds, and their
     * callbacks may destroy the tree: then stop walking it. */
    for (braid_service_t *c = s->last; c != NULL;) {
      braid_deferred_t d = BRAID_DEFERRED_INIT;
      if (braid_service_stop(c, grace, &d) == 0)
        braid__svc_wait(s, d);
      if (s->doomed)
        break;
      c = c->prev;
    }
    break;
  case SVC_LISTENER: {
    if (s->l != NULL) {
      braid_listener_close(s->l); /* stop accepting first */
      s->l = NULL;
    }
    if (s->drain != NULL)
      braid_policy_factory_each(s->pf, s->drain, s->drain_arg);
    braid_deferred_t d = BRAID_DEFERRED_INIT;
    if (braid_policy_factory_when_idle(s->pf, &d) == 0)
      braid__svc_wait(s, d);
    if (s->pending > 1) {
      if (grace == 0)
        braid_policy_factory_each(s->pf, braid__abort_visit, s);
      else if (grace != UINT64_MAX &&
               braid_timer_start(s->r, &s->deadline, grace,
                                 braid__svc_deadline_cb, s) < 0)
        braid_policy_factory_each(s->pf, braid__abort_visit, s);
    }
    break;
  }
  case SVC_CLIENT: {
    braid_deferred_t d = BRAID_DEFERRED_INIT;
    if (braid_client_service_stop(s->cs, grace, &d) == 0)
      braid__svc_wait(s, d);
    break;
  }
  default: /* SVC_CUSTOM */
    if (s->ops.stop != NULL) {
      braid_deferred_t d = BRAID_DEFERRED_INIT;
      int rc = s->ops.stop(s, s->arg, grace, &d);
      if (rc < 0)
        braid_reactor_log(s->r, BRAID_LOG_WARN, "service",
                          "service '%s' failed to stop: %s",
                          s->name != NULL ? s->name : "", braid_strerror(rc));
      braid__svc_wait(s, d);
    }
    break;
  }
}

/* A second stop while stopping: only a shorter grace changes anything. */
static void braid__svc_hurry(braid_service_t *s, uint64_t grace) {
  if (grace != 0)
    return;
  switch (s->kind) {
  case SVC_GROUP:
    for (braid_service_t *c = s->last; c != NULL; c = c->prev)
      if (c->state == SVC_STOPPING)
        braid__svc_hurry(c, 0);
    break;
  case SVC_LISTENER:
    if (braid_timer_active(&s->deadline))
      braid_timer_cancel(&s->deadline);
    braid_policy_factory_each(s->pf, braid__abort_visit, s);
    break;
  case SVC_CLIENT:
    braid_client_service_stop(s->cs, 0, NULL);
    break;
  default:
    break;
  }
}

int braid_service_stop(braid_service_t *s, uint64_t grace,
                       braid_deferred_t *out) {
  if (out != NULL)
    *out = braid_deferred_none();
  if (s == NULL || s->doomed)
    return BRAID_EINVAL;
  braid_deferred_t d = BRAID_DEFERRED_INIT;
  if (out != NULL) {
    if (s->state != SVC_STOPPED && s->nstops == s->capstops) {
      size_t cap = s->capstops ? s->capstops * 2 : 2;
      braid_deferred_t *n = braid_realloc(s->stops, cap * sizeof *n);
      if (n == NULL)
        return BRAID_ENOMEM;
      s->stops = n;
      s->capstops = cap;
    }
    int rc = braid_deferred_new(s->r, &d);
    if (rc < 0)
      return rc;
    *out = d;
    if (s->state == SVC_STOPPED) {
      braid_deferred_callback(d, NULL, NULL);
      return 0;
    }
    braid_deferred_ref(d);
    s->stops[s->nstops++] = d;
  } else if (s->state == SVC_STOPPED) {
    return 0;
  }
  if (s->state == SVC_STOPPING) {
    braid__svc_hurry(s, grace);
    return 0;
  }
  s->state = SVC_STOPPING;
  s->aborted = 0;
  s->pending = 1; /* this setup */
  braid__svc_ref(s);
  braid__svc_stop_parts(s, grace);
  braid__svc_part_done(s);
  braid__svc_unref(s);
  return 0;
}

/* ------------------------------------------------------------------------
 * Starting
 * ------------------------------------------------------------------------ */

static int braid__svc_start_one(braid_service_t *s, char *err, size_t errlen) {
  switch (s->kind) {
  case SVC_GROUP: {
    int rc = 0;
    braid_service_t *c;
    for (c = s->first; c != NULL; c = c->next) {
      if (c->state == SVC_RUNNING)
        continue;
      char sub[256] = "";
      rc = braid_service_start(c, sub, sizeof sub);
      if (s->doomed)
        return BRAID_ECANCELED; /* a start callback destroyed the tree */
      if (rc < 0) {
        braid__svc_err(err, errlen, "%s", sub);
        break;
      }
      c->starting = 1;
    }
    /* On failure, undo what this call started, in reverse order, at once;
     * children that ran before are left running. */
    for (braid_service_t *u = c != NULL ? c->prev : s->last; u != NULL;
         u = u->prev) {
      if (rc < 0 && u->starting)
        braid_service_stop(u, 0, NULL);
      u->starting = 0;
    }
    return rc;
  }
  case SVC_LISTENER: {
    char sub[256] = "";
    int rc =
        braid_endpoint_listen(s->r, s->endpoint, s->pf, &s->l, sub, sizeof sub);
    if (rc < 0) {
      s->l = NULL;
      braid__svc_err(err, errlen, "%s%slistener %s: %s",
                     s->name != NULL ? s->name : "",
                     s->name != NULL ? ": " : "", s->endpoint,
                     sub[0] != '\0' ? sub : braid_strerror(rc));
    }
    return rc;
  }
  case SVC_CLIENT: {
    int rc = braid_client_service_start(s->cs);
    if (rc < 0)
      braid__svc_err(err, errlen, "%s%sclient: %s",
                     s->name != NULL ? s->name : "",
                     s->name != NULL ? ": " : "", braid_strerror(rc));
    return rc;
  }
  default: { /* SVC_CUSTOM */
    char sub[256] = "";
    int rc = s->ops.start(s, s->arg, sub, sizeof sub);
    if (rc < 0)
      braid__svc_err(err, errlen, "%s%s%s", s->name != NULL ? s->name : "",
                     s->name != NULL ? ": " : "",
                     sub[0] != '\0' ? sub : braid_strerror(rc));
    return rc;
  }
  }
}

int braid_service_start(braid_service_t *s, char *err, size_t errlen) {
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (s == NULL || s->doomed)
    return BRAID_EINVAL;
  if (s->state == SVC_RUNNING)
    return BRAID_EALREADY;
  if (s->state == SVC_STOPPING)
    return BRAID_EBUSY;
  braid__svc_ref(s);
  int rc = braid__svc_start_one(s, err, errlen);
  if (rc == 0 && !s->doomed)
    s->state = SVC_RUNNING;
  braid__svc_unref(s);
  return rc;
}

/* ------------------------------------------------------------------------
 * Creating, the tree, destroying
 * ------------------------------------------------------------------------ */

int braid_service_group_create(braid_reactor_t *r, const char *name,
                               braid_service_t **out) {
  return braid__svc_new(r, name, SVC_GROUP, out);
}

int braid_service_listener_create(braid_reactor_t *r, const char *name,
                                  const char *endpoint, braid_factory_t *f,
                                  const braid_service_listener_options *opts,
                                  braid_service_t **out, char *err,
                                  size_t errlen) {
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (out != NULL)
    *out = NULL;
  if (endpoint == NULL || f == NULL || f->build == NULL) {
    braid__svc_err(err, errlen, "listener: need an endpoint and a factory");
    return BRAID_EINVAL;
  }
  /* Core's own types are checked now; another module's scheme (tls:, or
   * one added to the reactor, braid/endpoint.h) parses its descriptions
   * itself, when the listener starts. */
  int rc = 0;
  if (!braid__endpoint_is_scheme(r, endpoint)) {
    braid_endpoint_t ep;
    rc = braid_endpoint_parse(&ep, endpoint, true, err, errlen);
    if (rc < 0)
      return rc;
  }
  braid_service_t *s;
  rc = braid__svc_new(r, name, SVC_LISTENER, &s);
  if (rc < 0)
    return rc;
  s->endpoint = braid__svc_strdup(endpoint);
  if (s->endpoint == NULL) {
    braid__svc_unref(s);
    return BRAID_ENOMEM;
  }
  rc = braid_policy_factory_create(r, f, opts != NULL ? &opts->policy : NULL,
                                   &s->pf);
  if (rc < 0) {
    braid__svc_err(err, errlen, "listener %s: bad policy: %s", endpoint,
                   braid_strerror(rc));
    braid__svc_unref(s);
    return rc;
  }
  if (opts != NULL) {
    s->drain = opts->drain;
    s->drain_arg = opts->drain_arg;
  }
  *out = s;
  return 0;
}

int braid_service_client_create(braid_reactor_t *r, const char *name,
                                const braid_client_service_options *opts,
                                braid_service_t **out, char *err,
                                size_t errlen) {
  if (out != NULL)
    *out = NULL;
  braid_client_service_t *cs;
  int rc = braid_client_service_create(r, opts, &cs, err, errlen);
  if (rc < 0)
    return rc;
  braid_service_t *s;
  rc = braid__svc_new(r, name, SVC_CLIENT, &s);
  if (rc < 0) {
    braid_client_service_destroy(cs);
    return rc;
  }
  s->cs = cs;
  *out = s;
  return 0;
}

int braid_service_custom_create(braid_reactor_t *r, const char *name,
                                const braid_service_ops *ops, void *arg,
                                braid_service_t **out) {
  if (out != NULL)
    *out = NULL;
  if (ops == NULL || ops->start == NULL)
    return BRAID_EINVAL;
  braid_service_t *s;
  int rc = braid__svc_new(r, name, SVC_CUSTOM, &s);
  if (rc < 0)
    return rc;
  s->ops = *ops;
  s->arg = arg;
  *out = s;
  return 0;
}

int braid_service_add(braid_service_t *group, braid_service_t *child) {
  if (group == NULL || child == NULL || group->kind != SVC_GROUP ||
      child->parent != NULL || group->doomed || child->doomed)
    return BRAID_EINVAL;
  for (braid_service_t *a = group; a != NULL; a = a->parent)
    if (a == child)
      return BRAID_EINVAL; /* a cycle */
  if (group->state != SVC_STOPPED)
    return BRAID_EBUSY;
  if (child->name != NULL && braid_service_find(group, child->name) != NULL)
    return BRAID_EEXIST;
  child->parent = group;
  child->prev = group->last;
  child->next = NULL;
  if (group->last != NULL)
    group->last->next = child;
  else
    group->first = child;
  group->last = child;
  return 0;
}

/* Tear down `s` and its subtree now. */
static void braid__svc_kill(braid_service_t *s) {
  s->doomed = 1;
  switch (s->kind) {
  case SVC_GROUP: {
    braid_service_t *c = s->first;
    s->first = s->last = NULL;
    while (c != NULL) {
      braid_service_t *next = c->next;
      c->parent = NULL;
      braid__svc_kill(c);
      braid__svc_unref(c);
      c = next;
    }
    break;
  }
  case SVC_LISTENER:
    if (braid_timer_active(&s->deadline))
      braid_timer_cancel(&s->deadline);
    if (s->l != NULL)
      braid_listener_close(s->l);
    s->l = NULL;
    braid_policy_factory_each(s->pf, braid__abort_visit, s);
    /* Open connections keep the factory's memory until they end; its
     * when_idle deferreds fail now, which lets go of our references. */
    braid_policy_factory_destroy(s->pf);
    s->pf = NULL;
    break;
  case SVC_CLIENT:
    braid_client_service_destroy(s->cs);
    s->cs = NULL;
    break;
  default:
    if (s->ops.destroy != NULL)
      s->ops.destroy(s->arg);
    break;
  }
  braid__svc_fire_stops(s, BRAID_ECANCELED);
}

int braid_service_destroy(braid_service_t *s) {
  if (s == NULL)
    return 0;
  if (s->parent != NULL || s->doomed)
    return BRAID_EINVAL;
  braid__svc_ref(s);
  braid__svc_kill(s);
  braid__svc_unref(s); /* ours */
  braid__svc_unref(s); /* the owner's */
  return 0;
}

/* ------------------------------------------------------------------------
 * Queries
 * ------------------------------------------------------------------------ */

bool braid_service_running(const braid_service_t *s) {
  return s != NULL && s->state == SVC_RUNNING;
}

bool braid_service_stopping(const braid_service_t *s) {
  return s != NULL && s->state == SVC_STOPPING;
}

const char *braid_service_name(const braid_service_t *s) {
  return s != NULL ? s->name : NULL;
}

braid_service_t *braid_service_parent(const braid_service_t *s) {
  return s != NULL ? s->parent : NULL;
}

braid_service_t *braid_service_find(const braid_service_t *group,
                                    const char *name) {
  if (group == NULL || name == NULL || group->kind != SVC_GROUP)
    return NULL;
  for (braid_service_t *c = group->first; c != NULL; c = c->next)
    if (c->name != NULL && strcmp(c->name, name) == 0)
      return c;
  return NULL;
}

size_t braid_service_connections(const braid_service_t *s) {
  if (s == NULL || s->doomed)
    return 0;
  switch (s->kind) {
  case SVC_GROUP: {
    size_t n = 0;
    for (const braid_service_t *c = s->first; c != NULL; c = c->next)
      n += braid_service_connections(c);
    return n;
  }
  case SVC_LISTENER: {
    braid_policy_stats st;
    return braid_policy_factory_stats(s->pf, &st) == 0 ? st.open : 0;
  }
  case SVC_CLIENT:
    return braid_client_service_protocol(s->cs) != NULL ? 1 : 0;
  default:
    return 0;
  }
}

uint64_t braid_service_aborted(const braid_service_t *s) {
  if (s == NULL)
    return 0;
  uint64_t n = s->aborted;
  for (const braid_service_t *c = s->first; c != NULL; c = c->next)
    n += braid_service_aborted(c);
  return n;
}

int braid_service_listener_addr(const braid_service_t *s, braid_addr_t *out) {
  if (s == NULL || out == NULL || s->kind != SVC_LISTENER)
    return BRAID_EINVAL;
  if (s->l == NULL)
    return BRAID_ECLOSED;
  return braid_listener_addr(s->l, out);
}

braid_factory_t *braid_service_listener_factory(const braid_service_t *s) {
  return s != NULL && s->kind == SVC_LISTENER ? s->pf : NULL;
}

braid_client_service_t *braid_service_client(const braid_service_t *s) {
  return s != NULL && s->kind == SVC_CLIENT ? s->cs : NULL;
}
