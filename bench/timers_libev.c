/* Timer benchmark, libev: N ev_timer in one array, ev_timer_init +
 * ev_timer_start (after = ms / 1000.0, repeat 0), ev_timer_stop to cancel.
 * See timers_common.h for what is measured. */
#include <ev.h>

#include "timers_common.h"

static size_t fired;

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop;
  (void)w;
  (void)revents;
  fired++;
}

int main(int argc, char **argv) {
  bench_args a = bench_parse(argc, argv);
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  if (loop == NULL)
    return 1;
  ev_timer *timers = malloc(a.n * sizeof *timers);
  if (timers == NULL)
    return 1;

  bench_result res = {0};
  /* Timeouts count from the loop's cached "now": refresh it first. */
  ev_now_update(loop);
  res.rss0 = bench_rss_bytes();
  res.cpu0 = bench_cpu_s();
  res.t0 = bench_now();
  for (size_t i = 0; i < a.n; i++) {
    ev_timer_init(&timers[i], on_timer, (double)bench_next_ms() * 1e-3, 0.);
    ev_timer_start(loop, &timers[i]);
  }
  res.t_insert = bench_now();
  res.rss1 = bench_rss_bytes();
  if (a.cancel)
    for (size_t i = 0; i < a.n; i++)
      if (bench_cancelled(i))
        ev_timer_stop(loop, &timers[i]);
  ev_run(loop, 0);
  res.t_end = bench_now();
  res.fired = fired;
  int status = bench_report("libev", &a, &res);
  ev_loop_destroy(loop);
  free(timers);
  return status;
}
