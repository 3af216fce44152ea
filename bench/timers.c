/* Timer benchmark, braid: N caller-owned braid_timer_t in one array.
 * See timers_common.h for what is measured. */
#include <braid/braid.h>

#include "timers_common.h"

static size_t fired;

static void on_timer(braid_timer_t *t, void *arg) {
  (void)t;
  (void)arg;
  fired++;
}

int main(int argc, char **argv) {
  bench_args a = bench_parse(argc, argv);
  braid_reactor_t *r;
  int rc = braid_reactor_create(&r, NULL);
  if (rc < 0) {
    fprintf(stderr, "braid_reactor_create: %s\n", braid_strerror(rc));
    return 1;
  }
  braid_timer_t *timers = malloc(a.n * sizeof *timers);
  if (timers == NULL)
    return 1;

  bench_result res = {0};
  /* Timeouts count from the loop's cached "now": refresh it first. */
  braid_reactor_update_time(r);
  res.rss0 = bench_rss_bytes();
  res.cpu0 = bench_cpu_s();
  res.t0 = bench_now();
  for (size_t i = 0; i < a.n; i++) {
    timers[i] = (braid_timer_t)BRAID_TIMER_INIT;
    rc = braid_timer_start(r, &timers[i], BRAID_MSEC(bench_next_ms()),
                           on_timer, NULL);
    if (rc < 0) {
      fprintf(stderr, "braid_timer_start: %s\n", braid_strerror(rc));
      return 1;
    }
  }
  res.t_insert = bench_now();
  res.rss1 = bench_rss_bytes();
  if (a.cancel)
    for (size_t i = 0; i < a.n; i++)
      if (bench_cancelled(i) && braid_timer_cancel(&timers[i]) < 0)
        return 1;
  rc = braid_reactor_run(r);
  res.t_end = bench_now();
  if (rc < 0) {
    fprintf(stderr, "braid_reactor_run: %s\n", braid_strerror(rc));
    return 1;
  }
  res.fired = fired;
  int status = bench_report("braid", &a, &res);
  braid_reactor_destroy(r);
  free(timers);
  return status;
}
