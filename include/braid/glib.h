/* braid and GLib, in both directions. Built only when GLib is found
 * (meson -Dglib=auto|enabled|disabled), as the separate library
 * braid-glib, so that libbraid itself never depends on GLib.
 *
 *  - braid inside a GLib main loop: braid_glib_source_new() makes a
 *    GSource that runs braid's timers, transports, servers and deferreds
 *    from the GMainContext it is attached to (descriptor mode of
 *    braid/embed.h; epoll and kqueue).
 *  - GLib inside braid: braid_glib_host_context() makes each iteration of
 *    braid's loop also run one iteration of a GMainContext (prepare, query,
 *    check, dispatch), its descriptors watched through braid's poller, so
 *    GLib timeouts, idles and fd sources fire while braid_reactor_run()
 *    owns the thread (POSIX).
 *
 * Everything here runs on the thread that runs the loop; GLib's own
 * cross-thread calls (g_main_context_wakeup, g_idle_add from another
 * thread) work in both directions, as do braid_call_from_thread().
 */
#ifndef BRAID_GLIB_H
#define BRAID_GLIB_H

#include <glib.h>

#include "braid/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A new GSource (a floating reference the caller owns, as GLib's own
 * constructors return) that runs braid's ready work on dispatch:
 *   prepare: braid's timeout in milliseconds, rounded up, or TRUE when
 *            work is ready now (braid_embed_timeout() == 0);
 *   check:   braid's descriptor readable (g_source_add_unix_fd), or the
 *            timeout reached;
 *   dispatch: braid_embed_run(); the source stays attached.
 * Attach it with g_source_attach(), and g_source_destroy() plus
 * g_source_unref() it before braid_reactor_destroy(). Returns NULL when the
 * poller has no pollable descriptor (poll(2), and any without
 * BRAID__CAP_EMBED_FD): use the thread-hosted mode
 * of braid/embed.h, handing results over with g_main_context_invoke(). The
 * reactor enters embedded mode: do not also braid_reactor_run() it. */
GSource *braid_glib_source_new(braid_reactor_t *r);

/* Hosting a GMainContext in braid. */
typedef struct braid_glib_host braid_glib_host_t;

/* From now on, every iteration of r's loop also runs one iteration of ctx
 * (NULL: the default context): before braid waits, g_main_context_prepare
 * and g_main_context_query (braid's wait is shortened to GLib's timeout,
 * GLib's descriptors are watched level-style through braid's poller); after
 * it, g_main_context_check and g_main_context_dispatch. The context is
 * acquired (g_main_context_acquire) for as long as it is hosted, so no
 * other thread may iterate it meanwhile, and r is held alive
 * (braid_reactor_hold). Returns NULL when ctx is owned by another thread,
 * the reactor already hosts a context or is not on a POSIX readiness
 * poller (epoll, kqueue, poll; not io_uring or IOCP), or memory ran out. */
braid_glib_host_t *braid_glib_host_context(braid_reactor_t *r,
                                           GMainContext *ctx);

/* Stop hosting: GLib's descriptors leave braid's poller (they are GLib's,
 * never closed by braid), the context is released and r's hold dropped.
 * Call it on the loop thread, before braid_reactor_destroy(); from inside
 * a GLib callback the hosted context is dispatching, the host is freed
 * when that dispatch returns. NULL is ignored. */
void braid_glib_host_free(braid_glib_host_t *h);

#ifdef __cplusplus
}
#endif
#endif
