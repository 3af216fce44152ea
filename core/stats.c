/* braid_reactor_stats_get(): live object counts, for leak checks. Kept in
 * its own file so that the objects' own files only carry a counter each. */
#include <string.h>

#include "braid/threadpool.h"
#include "core/deferred_internal.h"
#include "core/internal.h"

int braid_reactor_stats_get(braid_reactor_t *r, braid_reactor_stats *out) {
  if (r == NULL || out == NULL)
    return BRAID_EINVAL;
  memset(out, 0, sizeof *out);
  out->streams = r->live_streams;
  out->listeners = r->live_listeners;
  out->udp = r->live_udp;
  out->timers = braid_reactor_timer_count(r);
  out->call_soons = r->soon_len;
  braid__mutex_lock(&r->tlock);
  out->thread_calls = r->tq_len;
  braid__mutex_unlock(&r->tlock);
  for (braid_signal_t *s = r->signals; s != NULL; s = s->next_)
    out->signals++;
  /* Read the deferred state without creating it: asking for counts must
   * not allocate. */
  if (r->defer != NULL)
    out->deferreds = r->defer->deferreds.live;
  braid_threadpool_stats ps;
  if (braid_threadpool_stats_get(r, &ps) == 0)
    out->pool_jobs = ps.in_flight;
  out->holds = r->holds;
  return 0;
}
