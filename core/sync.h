/* A mutex and a thread type, the only threading core needs. Implemented
 * with pthreads on POSIX and SRW locks / Win32 threads on Windows. */
#ifndef BRAID_CORE_SYNC_H
#define BRAID_CORE_SYNC_H

#ifdef _WIN32
#include <windows.h>
typedef SRWLOCK braid__mutex;
typedef HANDLE braid__thread;
typedef CONDITION_VARIABLE braid__cond;
#define BRAID__MUTEX_INIT SRWLOCK_INIT
#else
#include <pthread.h>
typedef pthread_mutex_t braid__mutex;
typedef pthread_t braid__thread;
typedef pthread_cond_t braid__cond;
#define BRAID__MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#endif
/* BRAID__MUTEX_INIT: a static initializer, for the process-wide signal
 * registry's lock (core/io_signal.c), which no reactor owns. */

int braid__mutex_init(braid__mutex *m);
void braid__mutex_destroy(braid__mutex *m);
void braid__mutex_lock(braid__mutex *m);
void braid__mutex_unlock(braid__mutex *m);

int braid__thread_create(braid__thread *t, void *(*fn)(void *), void *arg);
int braid__thread_join(braid__thread t);

/* A condition variable, for the thread pool's idle workers and for threads
 * blocked in braid_blocking_call_from_thread(). */
int braid__cond_init(braid__cond *c);
void braid__cond_destroy(braid__cond *c);
void braid__cond_wait(braid__cond *c, braid__mutex *m);
void braid__cond_signal(braid__cond *c);
void braid__cond_broadcast(braid__cond *c);

#endif
