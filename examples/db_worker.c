/* A "database call" on a worker thread while the loop keeps its timer.
 *
 * The query is a blocking function (it sleeps 200 ms, as a slow SQL query
 * would block in its client library). braid_defer_to_thread runs it on the
 * reactor's thread pool and hands back a deferred; meanwhile a LoopingCall
 * ticks every 10 ms on the reactor thread. The program prints each query
 * result and, at the end, the largest lateness of any tick: it stays far
 * below the 200 ms a query would have cost had it run on the loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "braid/braid.h"

#define QUERIES 5

typedef struct app {
  braid_reactor_t *r;
  braid_looping_call_t ticker;
  uint64_t start, max_late;
  uint64_t ticks;
  int answered;
} app;

/* Runs on a worker thread: blocks, like a real database client would. */
static int slow_query(void *arg, void **value, braid_dtor_cb *dtor) {
  long id = (long)(intptr_t)arg;
  struct timespec ts = {0, 200 * 1000 * 1000};
  nanosleep(&ts, NULL);
  char *row = malloc(64);
  if (row == NULL)
    return BRAID_ENOMEM;
  snprintf(row, 64, "row %ld: answer=%ld", id, id * 7);
  *value = row;
  *dtor = free; /* the deferred owns the row from here on */
  return 0;
}

static void on_row(braid_deferred_t d, braid_result_t *res, void *arg) {
  app *a = arg;
  (void)d;
  printf("query done at %4.0f ms: %s\n",
         (double)(braid_reactor_now(a->r) - a->start) / 1e6,
         (const char *)braid_result_value(res));
  if (++a->answered == QUERIES)
    braid_looping_call_stop(&a->ticker);
}

static void on_error(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  fprintf(stderr, "query failed: %s\n",
          braid_failure_message(braid_result_failure(res)));
  braid_result_set(res, NULL, NULL);
}

/* Every 10 ms on the reactor thread: how late is this tick? */
static braid_deferred_t tick(braid_looping_call_t *lc, uint64_t count,
                             void *arg) {
  app *a = arg;
  (void)lc;
  a->ticks += count;
  braid_reactor_update_time(a->r);
  uint64_t due = a->start + a->ticks * BRAID_MSEC(10);
  uint64_t now = braid_reactor_now(a->r);
  if (now > due && now - due > a->max_late)
    a->max_late = now - due;
  return braid_deferred_none();
}

int main(void) {
  app a = {0};
  if (braid_reactor_create(&a.r, NULL) != 0)
    return 1;
  braid_threadpool_configure(a.r, 2, 4);
  a.start = braid_reactor_now(a.r);
  a.ticks = 0;
  braid_looping_call_start(a.r, &a.ticker, BRAID_MSEC(10), false, tick, &a,
                           NULL);
  for (long i = 1; i <= QUERIES; i++) {
    braid_deferred_t d;
    if (braid_defer_to_thread(a.r, slow_query, (void *)(intptr_t)i, &d) == 0)
      braid_deferred_add_callbacks(d, on_row, &a, on_error, NULL);
  }
  braid_reactor_run(a.r);
  printf("%llu ticks of 10 ms while %d queries of 200 ms ran; max tick "
         "lateness %.3f ms\n",
         (unsigned long long)a.ticks, QUERIES, (double)a.max_late / 1e6);
  braid_reactor_destroy(a.r);
  return 0;
}
