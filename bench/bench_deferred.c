/* Deferred micro-benchmarks, with Twisted and Node.js doing the same work
 * in the same run (when found):
 *
 *   1. create + add 2 callbacks + fire + free, 1,000,000 times
 *   2. the same with a nested deferred: the first callback returns an
 *      unfired inner deferred, which is then fired (2 deferreds per round)
 *   3. deferToThread round trips per second, one at a time and 256 in flight
 *
 * Allocations are counted through braid_set_allocator in the steady state
 * of 1 and 2 (after a warm-up round); the goal is zero.
 *
 * Usage: bench_deferred [--no-peers] [N]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/braid.h"
#include "braid/testing.h"

#ifndef BRAID_BENCH_DIR
#define BRAID_BENCH_DIR "bench"
#endif

static size_t n_alloc;
static void *c_malloc(size_t n) {
  n_alloc++;
  return malloc(n);
}
static void *c_realloc(void *p, size_t n) {
  n_alloc++;
  return realloc(p, n);
}
static void *c_calloc(size_t a, size_t b) {
  n_alloc++;
  return calloc(a, b);
}
static void c_free(void *p) {
  n_alloc++;
  free(p);
}

static void cb_inc(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  braid_result_set(res, (void *)((intptr_t)braid_result_value(res) + 1), NULL);
}

static braid_deferred_t inner;
static void cb_nest(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  (void)arg;
  braid_result_chain(res, inner);
}

/* Freed deferreds are reaped by a call-soon at the end of each reactor
 * turn; a turn every 256 rounds is how a loop would see them. */
#define TURN 256

static intptr_t sink;

static double run_flat(braid_reactor_t *r, long n) {
  uint64_t t0 = braid_hrtime();
  for (long i = 0; i < n; i++) {
    braid_deferred_t d;
    braid_deferred_new(r, &d);
    braid_deferred_add_callback(d, cb_inc, NULL);
    braid_deferred_add_callback(d, cb_inc, NULL);
    braid_deferred_callback(d, (void *)(intptr_t)i, NULL);
    sink += (intptr_t)braid_result_value(braid_deferred_result(d));
    if ((i & (TURN - 1)) == TURN - 1)
      braid_testing_flush(r, 1);
  }
  braid_testing_flush(r, 1);
  return (double)(braid_hrtime() - t0) / (double)n;
}

static double run_nested(braid_reactor_t *r, long n) {
  uint64_t t0 = braid_hrtime();
  for (long i = 0; i < n; i++) {
    braid_deferred_t d;
    braid_deferred_new(r, &d);
    braid_deferred_new(r, &inner);
    braid_deferred_t in = inner;
    braid_deferred_add_callback(d, cb_nest, NULL);
    braid_deferred_add_callback(d, cb_inc, NULL);
    braid_deferred_callback(d, (void *)(intptr_t)i, NULL);
    braid_deferred_callback(in, (void *)(intptr_t)i, NULL);
    sink += (intptr_t)braid_result_value(braid_deferred_result(d));
    if ((i & (TURN - 1)) == TURN - 1)
      braid_testing_flush(r, 1);
  }
  braid_testing_flush(r, 1);
  return (double)(braid_hrtime() - t0) / (double)n;
}

/* ---- deferToThread ---------------------------------------------------------
 */

typedef struct tstate {
  braid_reactor_t *r;
  long left, done;
} tstate;

static int work_nop(void *arg, void **value, braid_dtor_cb *dtor) {
  (void)dtor;
  *value = arg;
  return 0;
}

static void on_done(braid_deferred_t d, braid_result_t *res, void *arg);

static void submit(tstate *s) {
  braid_deferred_t d;
  s->left--;
  if (braid_defer_to_thread(s->r, work_nop, NULL, &d) == 0)
    braid_deferred_add_callback(d, on_done, s);
}

static void on_done(braid_deferred_t d, braid_result_t *res, void *arg) {
  tstate *s = arg;
  (void)d;
  (void)res;
  s->done++;
  if (s->left > 0)
    submit(s);
}

static double run_threads(long n, int in_flight) {
  braid_reactor_t *r;
  if (braid_reactor_create(&r, NULL) != 0)
    return 0;
  braid_threadpool_configure(r, 4, 4);
  tstate s = {r, n, 0};
  /* Warm-up: start the workers. */
  for (int i = 0; i < in_flight && s.left > 0; i++)
    submit(&s);
  uint64_t t0 = braid_hrtime();
  braid_reactor_run(r);
  double secs = (double)(braid_hrtime() - t0) / 1e9;
  braid_reactor_destroy(r);
  return (double)s.done / secs;
}

static void run_peer(const char *what, const char *cmd) {
  printf("\n--- %s ---\n", what);
  fflush(stdout);
  int rc = system(cmd);
  if (rc != 0)
    printf("(%s not available: exit %d)\n", what, rc);
  fflush(stdout);
}

int main(int argc, char **argv) {
  long n = 1000000;
  int peers = 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--no-peers") == 0)
      peers = 0;
    else
      n = atol(argv[i]);
  }
  braid_set_allocator(c_malloc, c_realloc, c_calloc, c_free);
  braid_reactor_t *r;
  if (braid_testing_reactor_create(&r) != 0)
    return 1;
  printf("--- braid (C) ---\n");
  run_flat(r, 100000); /* warm-up */
  size_t a0 = n_alloc;
  double flat = run_flat(r, n);
  size_t flat_allocs = n_alloc - a0;
  run_nested(r, 100000);
  a0 = n_alloc;
  double nested = run_nested(r, n);
  size_t nested_allocs = n_alloc - a0;
  braid_reactor_destroy(r);
  braid_reset_allocator();
  printf("create+2 callbacks+fire+free:   %7.1f ns/deferred  (%zu allocator "
         "calls in %ld rounds)\n",
         flat, flat_allocs, n);
  printf("same with a nested deferred:    %7.1f ns/round     (%zu allocator "
         "calls in %ld rounds; 2 deferreds/round)\n",
         nested, nested_allocs, n);
  long tn = n / 10 < 200000 ? n / 10 : 200000;
  printf("deferToThread, 1 in flight:     %9.0f round trips/s\n",
         run_threads(tn, 1));
  printf("deferToThread, 256 in flight:   %9.0f round trips/s\n",
         run_threads(tn, 256));
  if (sink == 42)
    printf(" \n");
  if (peers) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 %s/deferred_twisted.py %ld 2>&1",
             BRAID_BENCH_DIR, n);
    run_peer("Twisted (CPython)", cmd);
    snprintf(cmd, sizeof cmd, "node %s/deferred_node.js %ld 2>&1",
             BRAID_BENCH_DIR, n);
    run_peer("Node.js Promises", cmd);
  }
  return 0;
}
