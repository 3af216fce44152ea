/* A mutex and a thread type, the only threading core needs. Implemented
 * with pthreads on POSIX and SRW locks / Win32 threads on Windows. */
#ifndef BRAID_CORE_SYNC_H
#define BRAID_CORE_SYNC_H

#ifdef _WIN32
#include <windows.h>
typedef SRWLOCK braid__mutex;
typedef HANDLE braid__thread;
#else
#include <pthread.h>
typedef pthread_mutex_t braid__mutex;
typedef pthread_t braid__thread;
#endif

int braid__mutex_init(braid__mutex *m);
void braid__mutex_destroy(braid__mutex *m);
void braid__mutex_lock(braid__mutex *m);
void braid__mutex_unlock(braid__mutex *m);

int braid__thread_create(braid__thread *t, void *(*fn)(void *), void *arg);
int braid__thread_join(braid__thread t);

#endif
