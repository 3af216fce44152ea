/* Shared scaffolding for the timer benchmarks (bench/timers*.c).
 *
 * Every program schedules the same N timers with the same timeouts, drawn
 * from one xorshift64 sequence with a fixed seed, so braid and its peers do
 * identical work. Timeouts are whole milliseconds in [0, 100], because that
 * is the finest unit libuv accepts; the others get the same values in their
 * own units. In the "cancel" variant every odd-numbered timer (i % 2 == 1)
 * is cancelled after all have been scheduled and before the loop runs.
 *
 * Memory: bytes_per_timer = (resident set after scheduling - resident set
 * before) / N, both read from /proc/self/statm. The timer array is allocated
 * (malloc, not touched) before the first reading, so the figure includes the
 * timer structs themselves, which are initialized inside the scheduling
 * loop, plus whatever the library allocates for its queue. It is the whole
 * cost of a pending timer, not just the library's share.
 *
 * cpu_s is user + system time from before scheduling to the loop's exit.
 *
 * This header is benchmark scaffolding, not library code: everything is
 * static and it is included once per program.
 */
#ifndef BRAID_BENCH_TIMERS_COMMON_H
#define BRAID_BENCH_TIMERS_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_DEFAULT_N 1000000u
#define BENCH_MAX_MS 100u
#define BENCH_SEED UINT64_C(88172645463325252)

typedef struct bench_args {
  size_t n;
  int cancel; /* 1: cancel every other timer before running */
} bench_args;

/* xorshift64 (Marsaglia 2003), fixed seed: the same sequence everywhere. */
static uint64_t bench_rng_state = BENCH_SEED;

static inline uint64_t bench_rng(void) {
  uint64_t x = bench_rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  bench_rng_state = x;
  return x;
}

/* Timeout of the next timer in whole milliseconds, 0..BENCH_MAX_MS. */
static inline unsigned bench_next_ms(void) {
  return (unsigned)((bench_rng() >> 32) % (BENCH_MAX_MS + 1));
}

static inline int bench_cancelled(size_t i) { return (i & 1u) != 0; }

static inline size_t bench_expected(const bench_args *a) {
  return a->cancel ? a->n - a->n / 2 : a->n;
}

static double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Current resident set in bytes, from /proc/self/statm (0 if unreadable). */
static long long bench_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return 0;
  long long size = 0, resident = 0;
  int ok = fscanf(f, "%lld %lld", &size, &resident) == 2;
  fclose(f);
  return ok ? resident * (long long)sysconf(_SC_PAGESIZE) : 0;
}

/* User + system CPU seconds so far. total_s has a floor of about 0.1 s (the
 * longest timeout) however fast the library is; cpu_s shows the work. */
static double bench_cpu_s(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static long bench_peak_rss_kb(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
  return ru.ru_maxrss; /* kilobytes on Linux */
}

/* argv: [cancel|nocancel] [N] */
static bench_args bench_parse(int argc, char **argv) {
  bench_args a = {BENCH_DEFAULT_N, 0};
  if (argc > 1) {
    if (strcmp(argv[1], "cancel") == 0)
      a.cancel = 1;
    else if (strcmp(argv[1], "nocancel") != 0) {
      fprintf(stderr, "usage: %s [cancel|nocancel] [N]\n", argv[0]);
      exit(2);
    }
  }
  if (argc > 2) {
    char *end;
    unsigned long long v = strtoull(argv[2], &end, 10);
    if (*end != '\0' || v == 0 || v > 100000000ull) {
      fprintf(stderr, "%s: bad N '%s'\n", argv[0], argv[2]);
      exit(2);
    }
    a.n = (size_t)v;
  }
  return a;
}

typedef struct bench_result {
  double t0;        /* before the scheduling loop */
  double t_insert;  /* after the scheduling loop */
  double t_end;     /* after the loop returned */
  double cpu0;      /* CPU seconds before the scheduling loop */
  long long rss0;   /* resident bytes before scheduling */
  long long rss1;   /* resident bytes after scheduling */
  size_t fired;
} bench_result;

/* Print the result line; returns the process exit status. */
static int bench_report(const char *name, const bench_args *a,
                        const bench_result *r) {
  size_t want = bench_expected(a);
  printf("name=%s variant=%s n=%zu insert_s=%.6f total_s=%.6f fired=%zu "
         "cpu_s=%.6f peak_rss_kb=%ld bytes_per_timer=%.2f\n",
         name, a->cancel ? "cancel" : "nocancel", a->n, r->t_insert - r->t0,
         r->t_end - r->t0, r->fired, bench_cpu_s() - r->cpu0, bench_peak_rss_kb(),
         (double)(r->rss1 - r->rss0) / (double)a->n);
  fflush(stdout);
  if (r->fired != want) {
    fprintf(stderr, "%s: fired %zu timers, expected %zu\n", name, r->fired,
            want);
    return 1;
  }
  return 0;
}

#endif
