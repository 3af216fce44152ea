/* Internal hooks for adapters that host another event loop inside braid
 * (adapters/glib). Not public API. */
#ifndef BRAID_CORE_EMBED_INTERNAL_H
#define BRAID_CORE_EMBED_INTERNAL_H

#include "core/internal.h"

/* Called by every loop iteration around the I/O wait, on the loop thread:
 * before(r, timeout, arg) returns the timeout to wait with (it may only
 * shorten it: -1 is "forever"); after(r, arg) runs once the wait's
 * callbacks have. One adapter per reactor; NULL before clears them.
 * BRAID_EBUSY if another adapter holds them, BRAID_ENOMEM. */
typedef int64_t (*braid__iter_before_cb)(braid_reactor_t *r, int64_t timeout,
                                         void *arg);
typedef void (*braid__iter_after_cb)(braid_reactor_t *r, void *arg);
int braid__embed_set_iter_hooks(braid_reactor_t *r,
                                braid__iter_before_cb before,
                                braid__iter_after_cb after, void *arg);

#endif
