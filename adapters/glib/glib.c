/* braid and GLib in both directions (include/braid/glib.h). Only GLib's
 * documented custom-source and main-context APIs are used; nothing here
 * reaches into GLib's private state. */
#include <limits.h>
#include <stdint.h>

#include "braid/embed.h"
#include "braid/glib.h"
#include "braid/watch.h"

/* ------------------------------------------------------------------------
 * braid as a GSource
 * ------------------------------------------------------------------------ */

typedef struct braid__gsource {
  GSource base; /* first: GLib allocates the struct through g_source_new */
  braid_reactor_t *r;
  gpointer tag; /* braid's descriptor, from g_source_add_unix_fd */
} braid__gsource;

/* Milliseconds for GLib, rounded up: a wait rounded down would wake just
 * before braid's timer is due, find nothing ready and spin once more. */
static gint braid__glib_ms(int64_t ns) {
  if (ns < 0)
    return -1;
  int64_t ms = (ns + 999999) / 1000000;
  return ms > INT_MAX ? INT_MAX : (gint)ms;
}

static gboolean braid__gsource_prepare(GSource *s, gint *timeout) {
  braid__gsource *bs = (braid__gsource *)s;
  int64_t t = braid_embed_timeout(bs->r);
  *timeout = braid__glib_ms(t);
  return t == 0;
}

static gboolean braid__gsource_check(GSource *s) {
  braid__gsource *bs = (braid__gsource *)s;
  if (g_source_query_unix_fd(s, bs->tag) & (G_IO_IN | G_IO_ERR | G_IO_HUP))
    return TRUE;
  return braid_embed_timeout(bs->r) == 0;
}

static gboolean braid__gsource_dispatch(GSource *s, GSourceFunc cb,
                                        gpointer data) {
  (void)cb;
  (void)data;
  braid__gsource *bs = (braid__gsource *)s;
  /* BRAID_EBUSY when a braid callback runs a nested GLib iteration that
   * reaches this source (GLib allows that only with
   * g_source_set_can_recurse()): braid's outer dispatch picks the work
   * up. Other errors are the poller's own, which braid logs. */
  (void)braid_embed_run(bs->r);
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs braid__gsource_funcs = {braid__gsource_prepare,
                                            braid__gsource_check,
                                            braid__gsource_dispatch,
                                            NULL,
                                            NULL,
                                            NULL};

GSource *braid_glib_source_new(braid_reactor_t *r) {
  if (r == NULL)
    return NULL;
  int fd = braid_embed_fd(r);
  if (fd < 0)
    return NULL;
  GSource *s = g_source_new(&braid__gsource_funcs, sizeof(braid__gsource));
  braid__gsource *bs = (braid__gsource *)s;
  bs->r = r;
  bs->tag = g_source_add_unix_fd(s, fd, G_IO_IN);
  g_source_set_name(s, "braid");
  return s;
}

/* ------------------------------------------------------------------------
 * A GMainContext hosted in braid
 * ------------------------------------------------------------------------ */

#ifndef _WIN32

/* One descriptor GLib asked about, watched through braid's poller. GLib
 * may list a descriptor several times (two sources on one fd); the poller
 * takes it once, with the union of their events. */
typedef struct braid__gwatch {
  braid_watch_t *w;
  struct braid_glib_host *h;
  int fd;
  unsigned want; /* this iteration's union, BRAID_WATCH_* */
  int used;
} braid__gwatch;

struct braid_glib_host {
  braid_reactor_t *r;
  GMainContext *ctx;
  gint prio;
  GPollFD *fds;
  gint nfds, fds_cap;
  braid__gwatch **w;
  size_t nw, w_cap;
  int in_after; /* inside check/dispatch: free is deferred to its end */
  int dead;
};

static unsigned braid__gio_to_watch(gushort ev) {
  return ((ev & (G_IO_IN | G_IO_PRI)) ? BRAID_WATCH_READ : 0u) |
         ((ev & G_IO_OUT) ? BRAID_WATCH_WRITE : 0u);
}

/* Readiness from the poller, during braid's wait: recorded into every
 * GPollFD on that descriptor, for g_main_context_check() after the wait. */
static void braid__gwatch_cb(braid_watch_t *w, unsigned ev, void *arg) {
  (void)w;
  braid__gwatch *gw = arg;
  braid_glib_host_t *h = gw->h;
  gushort got = 0;
  if (ev & BRAID_WATCH_READ)
    got |= G_IO_IN | G_IO_PRI;
  if (ev & BRAID_WATCH_WRITE)
    got |= G_IO_OUT;
  if (ev & BRAID_WATCH_ERROR)
    got |= G_IO_ERR | G_IO_HUP;
  if (ev & BRAID_WATCH_HUP)
    got |= G_IO_HUP;
  for (gint i = 0; i < h->nfds; i++)
    if (h->fds[i].fd == gw->fd)
      h->fds[i].revents |= got & (h->fds[i].events | G_IO_ERR | G_IO_HUP);
}

/* The callback is not called after braid_watch_stop returns, so the
 * record can go at once. */
static void braid__gwatch_drop(braid__gwatch *gw) {
  braid_watch_stop(gw->w);
  g_free(gw);
}

/* Bring the poller's watches in line with GLib's descriptor list. An
 * unchanged list costs no syscall. */
static void braid__ghost_sync(braid_glib_host_t *h) {
  for (size_t j = 0; j < h->nw; j++) {
    h->w[j]->used = 0;
    h->w[j]->want = 0;
  }
  for (gint i = 0; i < h->nfds; i++) {
    int fd = h->fds[i].fd;
    braid__gwatch *gw = NULL;
    for (size_t j = 0; j < h->nw && gw == NULL; j++)
      if (h->w[j]->fd == fd)
        gw = h->w[j];
    if (gw == NULL) {
      if (h->nw == h->w_cap) {
        h->w_cap = h->w_cap ? h->w_cap * 2 : 8;
        h->w = g_renew(braid__gwatch *, h->w, h->w_cap);
      }
      gw = g_new0(braid__gwatch, 1);
      gw->h = h;
      gw->fd = fd;
      if (braid_watch_start(h->r, fd, 0, braid__gwatch_cb, gw, &gw->w) < 0) {
        /* Not pollable by braid's poller (epoll refuses regular files):
         * poll(2) calls those always ready, and so does this. */
        h->fds[i].revents = h->fds[i].events & (G_IO_IN | G_IO_OUT);
        g_free(gw);
        continue;
      }
      h->w[h->nw++] = gw;
    }
    gw->used = 1;
    gw->want |= braid__gio_to_watch(h->fds[i].events);
  }
  size_t k = 0;
  for (size_t j = 0; j < h->nw; j++) {
    braid__gwatch *gw = h->w[j];
    if (!gw->used) {
      braid__gwatch_drop(gw);
      continue;
    }
    braid_watch_set(gw->w, gw->want);
    h->w[k++] = gw;
  }
  h->nw = k;
}

static int64_t braid__ghost_before(braid_reactor_t *r, int64_t timeout,
                                   void *arg) {
  (void)r;
  (void)timeout;
  braid_glib_host_t *h = arg;
  gboolean ready = g_main_context_prepare(h->ctx, &h->prio);
  gint gtimeout = -1;
  for (;;) {
    gint n =
        g_main_context_query(h->ctx, h->prio, &gtimeout, h->fds, h->fds_cap);
    if (n <= h->fds_cap) {
      h->nfds = n;
      break;
    }
    h->fds_cap = n;
    h->fds = g_renew(GPollFD, h->fds, (gsize)n);
  }
  for (gint i = 0; i < h->nfds; i++)
    h->fds[i].revents = 0;
  braid__ghost_sync(h);
  if (ready)
    return 0;
  return gtimeout < 0 ? -1 : (int64_t)gtimeout * 1000000;
}

static void braid__ghost_free_now(braid_glib_host_t *h) {
  for (size_t j = 0; j < h->nw; j++)
    braid__gwatch_drop(h->w[j]);
  g_free(h->w);
  g_free(h->fds);
  braid_embed_set_iteration_hooks(h->r, NULL, NULL, NULL);
  braid_reactor_release(h->r);
  g_main_context_release(h->ctx);
  g_main_context_unref(h->ctx);
  g_free(h);
}

static void braid__ghost_after(braid_reactor_t *r, void *arg) {
  (void)r;
  braid_glib_host_t *h = arg;
  h->in_after = 1;
  if (g_main_context_check(h->ctx, h->prio, h->fds, h->nfds))
    g_main_context_dispatch(h->ctx);
  h->in_after = 0;
  if (h->dead)
    braid__ghost_free_now(h);
}

braid_glib_host_t *braid_glib_host_context(braid_reactor_t *r,
                                           GMainContext *ctx) {
  /* GLib's descriptors can be watched only through the readiness engine;
   * under io_uring or IOCP, use the thread-hosted mode of braid/embed.h. */
  if (r == NULL || !braid_watch_supported(r))
    return NULL;
  if (ctx == NULL)
    ctx = g_main_context_default();
  if (!g_main_context_acquire(ctx))
    return NULL;
  braid_glib_host_t *h = g_new0(braid_glib_host_t, 1);
  h->r = r;
  h->ctx = g_main_context_ref(ctx);
  if (braid_embed_set_iteration_hooks(r, braid__ghost_before,
                                      braid__ghost_after, h) < 0) {
    g_main_context_unref(ctx);
    g_main_context_release(ctx);
    g_free(h);
    return NULL;
  }
  /* GLib sources keep braid's loop going, as its own sources would keep a
   * GMainLoop going: braid cannot see whether GLib has any. */
  braid_reactor_hold(r);
  return h;
}

void braid_glib_host_free(braid_glib_host_t *h) {
  if (h == NULL || h->dead)
    return;
  h->dead = 1;
  if (!h->in_after)
    braid__ghost_free_now(h);
}

#else /* _WIN32: no readiness engine to watch GLib's descriptors with. */

braid_glib_host_t *braid_glib_host_context(braid_reactor_t *r,
                                           GMainContext *ctx) {
  (void)r;
  (void)ctx;
  return NULL;
}

void braid_glib_host_free(braid_glib_host_t *h) {
  (void)h;
}

#endif
