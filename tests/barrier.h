/* A thread barrier for the tests. POSIX barriers are an optional part of
 * POSIX threads that macOS does not provide (no pthread_barrier_t in its
 * <pthread.h>), so the tests use this mutex-and-condition one everywhere. */
#ifndef BRAID_TESTS_BARRIER_H
#define BRAID_TESTS_BARRIER_H

#include <pthread.h>

typedef struct test_barrier {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  unsigned count, waiting, round;
} test_barrier;

static inline int test_barrier_init(test_barrier *b, unsigned count) {
  b->count = count;
  b->waiting = 0;
  b->round = 0;
  if (pthread_mutex_init(&b->lock, NULL) != 0)
    return -1;
  if (pthread_cond_init(&b->cond, NULL) != 0) {
    pthread_mutex_destroy(&b->lock);
    return -1;
  }
  return 0;
}

/* Blocks until `count` threads have called it. The round number tells a
 * woken waiter that its round is over, so spurious wakeups and a barrier
 * reused at once are both handled. */
static inline void test_barrier_wait(test_barrier *b) {
  pthread_mutex_lock(&b->lock);
  unsigned round = b->round;
  if (++b->waiting == b->count) {
    b->waiting = 0;
    b->round++;
    pthread_cond_broadcast(&b->cond);
  } else {
    while (round == b->round)
      pthread_cond_wait(&b->cond, &b->lock);
  }
  pthread_mutex_unlock(&b->lock);
}

static inline void test_barrier_destroy(test_barrier *b) {
  pthread_cond_destroy(&b->cond);
  pthread_mutex_destroy(&b->lock);
}

#endif
