/* Timer benchmark, libuv: N uv_timer_t in one array, uv_timer_init +
 * uv_timer_start(timeout_ms, repeat 0), uv_timer_stop to cancel.
 * See timers_common.h for what is measured. */
#include <uv.h>

#include "timers_common.h"

static size_t fired;

static void on_timer(uv_timer_t *t) {
  (void)t;
  fired++;
}

int main(int argc, char **argv) {
  bench_args a = bench_parse(argc, argv);
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    return 1;
  uv_timer_t *timers = malloc(a.n * sizeof *timers);
  if (timers == NULL)
    return 1;

  bench_result res = {0};
  /* Timeouts count from the loop's cached "now": refresh it first. */
  uv_update_time(&loop);
  res.rss0 = bench_rss_bytes();
  res.cpu0 = bench_cpu_s();
  res.t0 = bench_now();
  for (size_t i = 0; i < a.n; i++) {
    uv_timer_init(&loop, &timers[i]);
    if (uv_timer_start(&timers[i], on_timer, bench_next_ms(), 0) != 0)
      return 1;
  }
  res.t_insert = bench_now();
  res.rss1 = bench_rss_bytes();
  if (a.cancel)
    for (size_t i = 0; i < a.n; i++)
      if (bench_cancelled(i))
        uv_timer_stop(&timers[i]);
  int rc = uv_run(&loop, UV_RUN_DEFAULT);
  res.t_end = bench_now();
  if (rc < 0)
    return 1;
  res.fired = fired;
  /* No teardown: closing a million handles is not what is measured, and the
   * process exits now. */
  return bench_report("libuv", &a, &res);
}
