/* Timer lateness of braid timers: braid's own loop (braid_reactor_run)
 * versus braid embedded in a GLib main loop (braid_glib_source_new), and
 * braid's loop while it hosts a GMainContext (braid_glib_host_context), in
 * one run. Each round schedules a chain of timers, each started from the
 * previous one's callback with a delay in [1, 10) ms that is not a whole
 * millisecond (GLib waits in milliseconds), and records how late each one
 * fired: callback time minus (start time + delay). The modes alternate
 * round by round so that machine load falls on all of them alike.
 * Usage: bench_embed_lateness [TIMERS_PER_ROUND] [ROUNDS] (200, 5). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/braid.h"
#include "braid/glib.h"

typedef struct run {
  braid_reactor_t *r;
  GMainLoop *loop; /* GLib mode: quit when done */
  braid_timer_t t;
  uint64_t due, seed;
  int n, want;
  int64_t *late;
} run;

static uint64_t next_delay(run *x) {
  x->seed ^= x->seed << 13;
  x->seed ^= x->seed >> 7;
  x->seed ^= x->seed << 17;
  return BRAID_USEC(1000 + x->seed % 9000);
}

static void fire(braid_timer_t *t, void *arg) {
  run *x = arg;
  x->late[x->n++] = (int64_t)(braid_hrtime() - x->due);
  if (x->n == x->want) {
    if (x->loop != NULL)
      g_main_loop_quit(x->loop);
    else
      braid_reactor_stop(x->r);
    return;
  }
  uint64_t d = next_delay(x);
  /* From a braid callback a delay counts from braid_reactor_now(). */
  x->due = braid_reactor_now(x->r) + d;
  braid_timer_start(x->r, t, d, fire, x);
}

static void start(run *x) {
  uint64_t d = next_delay(x);
  x->due = braid_hrtime() + d;
  braid_timer_start(x->r, &x->t, d, fire, x);
}

enum { MODE_BRAID, MODE_GLIB_SOURCE, MODE_BRAID_HOSTS_GLIB, MODES };
static const char *const mode_name[MODES] = {
    "braid_reactor_run", "GLib GMainLoop + braid GSource",
    "braid_reactor_run hosting a GMainContext"};

static int round_once(int mode, int64_t *late, int want, uint64_t seed) {
  run x;
  memset(&x, 0, sizeof x);
  x.late = late;
  x.want = want;
  x.seed = seed;
  if (braid_reactor_create(&x.r, NULL) < 0)
    return -1;
  if (mode == MODE_GLIB_SOURCE) {
    GSource *src = braid_glib_source_new(x.r);
    if (src == NULL) {
      braid_reactor_destroy(x.r);
      return -1;
    }
    GMainContext *ctx = g_main_context_new();
    x.loop = g_main_loop_new(ctx, FALSE);
    g_source_attach(src, ctx);
    start(&x);
    g_main_loop_run(x.loop);
    g_source_destroy(src);
    g_source_unref(src);
    g_main_loop_unref(x.loop);
    g_main_context_unref(ctx);
  } else if (mode == MODE_BRAID_HOSTS_GLIB) {
    GMainContext *ctx = g_main_context_new();
    braid_glib_host_t *h = braid_glib_host_context(x.r, ctx);
    if (h == NULL) { /* io_uring: no watches for GLib's descriptors */
      g_main_context_unref(ctx);
      braid_reactor_destroy(x.r);
      return -1;
    }
    start(&x);
    braid_reactor_run(x.r);
    braid_glib_host_free(h);
    g_main_context_unref(ctx);
  } else {
    start(&x);
    braid_reactor_run(x.r);
  }
  braid_reactor_destroy(x.r);
  return 0;
}

static int cmp(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int per = argc > 1 ? atoi(argv[1]) : 200;
  int rounds = argc > 2 ? atoi(argv[2]) : 5;
  if (per < 1 || rounds < 1)
    return 2;
  int64_t *late[MODES];
  int have[MODES] = {0};
  for (int m = 0; m < MODES; m++)
    late[m] = calloc((size_t)per * (size_t)rounds, sizeof(int64_t));
  for (int i = 0; i < rounds; i++)
    for (int m = 0; m < MODES; m++)
      if (round_once(m, late[m] + have[m], per, 0x9e3779b97f4a7c15ull + i) == 0)
        have[m] += per;
  braid_reactor_t *r;
  braid_reactor_create(&r, NULL);
  printf("poller %s, %d timers x %d rounds per mode, delays 1-10 ms\n",
         braid_reactor_poller(r), per, rounds);
  braid_reactor_destroy(r);
  printf("%-42s %10s %10s %10s\n", "mode", "p50 ms", "p99 ms", "max ms");
  for (int m = 0; m < MODES; m++) {
    if (have[m] == 0) {
      printf("%-42s %10s\n", mode_name[m], "n/a on this poller");
      continue;
    }
    qsort(late[m], (size_t)have[m], sizeof(int64_t), cmp);
    printf("%-42s %10.3f %10.3f %10.3f\n", mode_name[m],
           late[m][have[m] / 2] / 1e6,
           late[m][(size_t)have[m] * 99 / 100] / 1e6,
           late[m][have[m] - 1] / 1e6);
  }
  for (int m = 0; m < MODES; m++)
    free(late[m]);
  return 0;
}
