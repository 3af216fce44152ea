/* Timer benchmark, libevent: N struct event in one preallocated block,
 * event_assign (no per-event malloc, unlike event_new) + evtimer_add,
 * evtimer_del to cancel. The block is sized with
 * event_get_struct_event_size(), the public way to preallocate events
 * without depending on struct event's layout. Plain min-heap timers; the
 * "common timeout" queues (event_base_init_common_timeout) are not used,
 * as they need one queue per distinct duration.
 * See timers_common.h for what is measured. */
#include <event2/event.h>

#include "timers_common.h"

static size_t fired;

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  fired++;
}

int main(int argc, char **argv) {
  bench_args a = bench_parse(argc, argv);
  struct event_base *base = event_base_new();
  if (base == NULL)
    return 1;
  size_t esize = event_get_struct_event_size();
  char *block = malloc(a.n * esize);
  if (block == NULL)
    return 1;
#define EV_AT(i) ((struct event *)(void *)(block + (i)*esize))

  bench_result res = {0};
  /* Timeouts count from the loop's cached "now": refresh it first. */
  event_base_update_cache_time(base);
  res.rss0 = bench_rss_bytes();
  res.cpu0 = bench_cpu_s();
  res.t0 = bench_now();
  for (size_t i = 0; i < a.n; i++) {
    unsigned ms = bench_next_ms();
    struct timeval tv = {(time_t)(ms / 1000u), (suseconds_t)(ms % 1000u) * 1000};
    if (event_assign(EV_AT(i), base, -1, 0, on_timer, NULL) != 0 ||
        evtimer_add(EV_AT(i), &tv) != 0)
      return 1;
  }
  res.t_insert = bench_now();
  res.rss1 = bench_rss_bytes();
  if (a.cancel)
    for (size_t i = 0; i < a.n; i++)
      if (bench_cancelled(i) && evtimer_del(EV_AT(i)) != 0)
        return 1;
  int rc = event_base_dispatch(base);
  res.t_end = bench_now();
  if (rc < 0)
    return 1;
  res.fired = fired;
  int status = bench_report("libevent", &a, &res);
  event_base_free(base);
  free(block);
  return status;
}
