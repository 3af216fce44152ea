/* Signal watchers: delivery as loop callbacks, several watchers and
 * reactors, dispositions, misuse. Signals are process-wide, so each test
 * leaves every disposition as it found it. */
#ifdef _WIN32
/* Windows has no POSIX signals: SIGINT and SIGTERM are console control
 * events there (Ctrl-C / Ctrl-Break, console close), the rest of braid's
 * signal numbers do not exist. These tests check what Windows supports and
 * skip, with a reason, what cannot apply. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "braid/braid.h"

static void on_sig(braid_signal_t *s, int signo, unsigned count, void *arg) {
  (void)s;
  (void)signo;
  (void)count;
  (void)arg;
}

static void t_console_signals_watchable(void **st) {
  (void)st;
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid_signal_t a = {0}, b = {0}, c = {0};
  assert_int_equal(braid_signal_start(r, &a, SIGINT, on_sig, NULL), 0);
  assert_int_equal(braid_signal_start(r, &b, SIGTERM, on_sig, NULL), 0);
  assert_int_equal(braid_signal_start(r, &c, SIGINT, on_sig, NULL), 0);
  assert_int_equal(braid_signal_start(r, &a, SIGINT, on_sig, NULL),
                   BRAID_EBUSY);
  assert_int_equal(braid_signal_stop(&a), 0);
  assert_int_equal(braid_signal_stop(&b), 0);
  assert_int_equal(braid_signal_stop(&c), 0);
  assert_int_equal(braid_signal_stop(&c), BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_other_signals_refused(void **st) {
  (void)st;
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  braid_signal_t s = {0};
  /* Not a signal braid watches anywhere. */
  assert_int_equal(braid_signal_start(r, &s, SIGSEGV, on_sig, NULL),
                   BRAID_EINVAL);
  assert_int_equal(braid_signal_start(r, &s, 0, on_sig, NULL), BRAID_EINVAL);
  assert_int_equal(braid_signal_start(r, NULL, SIGINT, on_sig, NULL),
                   BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

static void t_posix_delivery(void **st) {
  (void)st;
  print_message("skipped: raise()/kill() of SIGUSR1, SIGHUP, SIGCHLD and "
                "fork() do not exist on Windows\n");
  skip();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_console_signals_watchable),
      cmocka_unit_test(t_other_signals_refused),
      cmocka_unit_test(t_posix_delivery),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "braid/braid.h"

#include "barrier.h"

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

static braid_reactor_t *new_reactor(void) {
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  return r;
}

/* The handler currently installed for signo. */
static void (*current_handler(int signo))(int) {
  struct sigaction sa;
  assert_int_equal(sigaction(signo, NULL, &sa), 0);
  return sa.sa_handler;
}

/* A watcher's record: how often it was called, with what, from where. */
typedef struct watch {
  braid_signal_t s;
  braid_reactor_t *r;
  pthread_t loop_thread;
  int calls;
  int last_signo;
  unsigned total_count;
  int wrong_thread;
  int stop_on_call; /* stop this watcher from its own callback */
  braid_signal_t *stop_other;
  int stop_rc;
} watch;

static void watch_cb(braid_signal_t *s, int signo, unsigned count, void *arg) {
  watch *w = arg;
  assert_ptr_equal(s, &w->s);
  w->calls++;
  w->last_signo = signo;
  w->total_count += count;
  if (!pthread_equal(pthread_self(), w->loop_thread))
    w->wrong_thread++;
  if (w->stop_on_call)
    w->stop_rc = braid_signal_stop(s);
  if (w->stop_other != NULL)
    assert_int_equal(braid_signal_stop(w->stop_other), 0);
}

static void watch_init(watch *w, braid_reactor_t *r) {
  memset(w, 0, sizeof *w);
  w->r = r;
  w->loop_thread = pthread_self();
  w->stop_rc = 1;
}

/* ------------------------------------------------------------------------
 * Delivery
 * ------------------------------------------------------------------------ */

static void t_each_signal_delivered(void **st) {
  (void)st;
  static const int sigs[] = {SIGUSR1, SIGUSR2, SIGHUP,
                             SIGTERM, SIGINT,  SIGCHLD};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    int signo = sigs[i];
    void (*before)(int) = current_handler(signo);
    braid_reactor_t *r = new_reactor();
    watch w;
    watch_init(&w, r);
    w.stop_on_call = 1;
    assert_int_equal(braid_signal_start(r, &w.s, signo, watch_cb, &w), 0);
    /* Half by raise() (to this thread), half by kill() (to the process). */
    if (i % 2 == 0)
      assert_int_equal(raise(signo), 0);
    else
      assert_int_equal(kill(getpid(), signo), 0);
    /* Only the handler ran so far; the callback waits for the loop. */
    assert_int_equal(w.calls, 0);
    /* The callback stops the watcher, which leaves nothing: run() ends. */
    assert_int_equal(braid_reactor_run(r), 0);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.last_signo, signo);
    assert_int_equal(w.total_count, 1);
    assert_int_equal(w.wrong_thread, 0);
    assert_int_equal(w.stop_rc, 0);
    assert_ptr_equal(current_handler(signo), before);
    assert_int_equal(braid_reactor_destroy(r), 0);
  }
}

/* SIGCHLD from a real child exiting, not just raise(). */
static void t_sigchld_from_child(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  watch w;
  watch_init(&w, r);
  w.stop_on_call = 1;
  assert_int_equal(braid_signal_start(r, &w.s, SIGCHLD, watch_cb, &w), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0)
    _exit(7);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(w.calls, 1);
  assert_int_equal(w.last_signo, SIGCHLD);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 7);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* Deliveries before the loop turns are coalesced into one call. */
static void t_coalesced(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  watch w;
  watch_init(&w, r);
  w.stop_on_call = 1;
  assert_int_equal(braid_signal_start(r, &w.s, SIGUSR1, watch_cb, &w), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(raise(SIGUSR1), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(w.calls, 1);
  assert_int_equal(w.total_count, 3);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A watcher started after earlier deliveries does not see them. */
static void t_late_watcher_sees_only_new(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  watch a, b;
  watch_init(&a, r);
  watch_init(&b, r);
  a.stop_on_call = 1;
  assert_int_equal(braid_signal_start(r, &a.s, SIGUSR2, watch_cb, &a), 0);
  assert_int_equal(raise(SIGUSR2), 0);
  assert_int_equal(raise(SIGUSR2), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(a.total_count, 2);
  a.stop_on_call = 1;
  b.stop_on_call = 1;
  assert_int_equal(braid_signal_start(r, &a.s, SIGUSR2, watch_cb, &a), 0);
  assert_int_equal(braid_signal_start(r, &b.s, SIGUSR2, watch_cb, &b), 0);
  assert_int_equal(raise(SIGUSR2), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(a.calls, 2);
  assert_int_equal(a.total_count, 3);
  assert_int_equal(b.calls, 1);
  assert_int_equal(b.total_count, 1);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * From another thread
 * ------------------------------------------------------------------------ */

typedef struct sender {
  int signo;
  unsigned delay_ms;
  int use_raise; /* raise() in the sending thread, else kill() */
  uint64_t sent_at;
} sender;

static void *send_thread(void *arg) {
  sender *s = arg;
  sleep_ms(s->delay_ms);
  s->sent_at = braid_hrtime();
  if ((s->use_raise ? raise(s->signo) : kill(getpid(), s->signo)) != 0)
    abort();
  return NULL;
}

/* raise() in another thread runs the handler on that thread; the callback
 * must still run on the loop thread. */
static void t_signal_from_other_thread(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  watch w;
  watch_init(&w, r);
  w.stop_on_call = 1;
  assert_int_equal(braid_signal_start(r, &w.s, SIGHUP, watch_cb, &w), 0);
  sender snd = {.signo = SIGHUP, .delay_ms = 10, .use_raise = 1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, send_thread, &snd), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(w.calls, 1);
  assert_int_equal(w.last_signo, SIGHUP);
  assert_int_equal(w.wrong_thread, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A watcher alone keeps run() alive until the signal comes. */
static void t_watcher_keeps_loop_alive(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  watch w;
  watch_init(&w, r);
  w.stop_on_call = 1;
  assert_int_equal(braid_signal_start(r, &w.s, SIGUSR1, watch_cb, &w), 0);
  sender snd = {.signo = SIGUSR1, .delay_ms = 20, .use_raise = 0};
  pthread_t th;
  uint64_t t0 = braid_hrtime();
  assert_int_equal(pthread_create(&th, NULL, send_thread, &snd), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  uint64_t t1 = braid_hrtime();
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_int_equal(w.calls, 1);
  /* run() returned only after the signal was sent. */
  assert_true(t1 >= snd.sent_at);
  assert_true(t1 - t0 >= BRAID_MSEC(20));
  assert_true(t1 - t0 < BRAID_SEC(5));
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* ------------------------------------------------------------------------
 * Several watchers and reactors
 * ------------------------------------------------------------------------ */

static void t_two_watchers_one_signal(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  watch a, b, other;
  watch_init(&a, r);
  watch_init(&b, r);
  watch_init(&other, r);
  a.stop_on_call = 1;
  b.stop_on_call = 1;
  assert_int_equal(braid_signal_start(r, &a.s, SIGUSR1, watch_cb, &a), 0);
  assert_int_equal(braid_signal_start(r, &b.s, SIGUSR1, watch_cb, &b), 0);
  assert_int_equal(braid_signal_start(r, &other.s, SIGUSR2, watch_cb, &other),
                   0);
  assert_int_equal(raise(SIGUSR1), 0);
  /* a and b stop themselves; other stays: run until both were called,
   * then stop other so that run() can end. */
  while (a.calls == 0 || b.calls == 0)
    assert_true(braid_reactor_run_once(r, true) >= 0);
  assert_int_equal(a.calls, 1);
  assert_int_equal(b.calls, 1);
  assert_int_equal(other.calls, 0);
  assert_int_equal(braid_signal_stop(&other.s), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

/* A callback that stops the other watcher of the same signal, in the same
 * delivery: the stopped one is not called afterwards. Exactly one of the
 * two runs, whichever the reactor calls first. */
static void t_callback_stops_sibling(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  watch a, b;
  watch_init(&a, r);
  watch_init(&b, r);
  a.stop_on_call = 1;
  b.stop_on_call = 1;
  a.stop_other = &b.s;
  b.stop_other = &a.s;
  assert_int_equal(braid_signal_start(r, &a.s, SIGUSR2, watch_cb, &a), 0);
  assert_int_equal(braid_signal_start(r, &b.s, SIGUSR2, watch_cb, &b), 0);
  assert_int_equal(raise(SIGUSR2), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(a.calls + b.calls, 1);
  assert_int_equal(braid_signal_stop(&a.s), BRAID_EINVAL);
  assert_int_equal(braid_signal_stop(&b.s), BRAID_EINVAL);
  assert_int_equal(braid_reactor_destroy(r), 0);
}

typedef struct two_loops {
  test_barrier ready;
  watch w[2];
  int run_rc[2];
  int create_rc[2], start_rc[2];
} two_loops;

typedef struct loop_arg {
  two_loops *tl;
  int i;
} loop_arg;

static void *signal_loop(void *arg) {
  loop_arg *la = arg;
  two_loops *tl = la->tl;
  watch *w = &tl->w[la->i];
  braid_reactor_t *r = NULL;
  tl->create_rc[la->i] = braid_reactor_create(&r, NULL);
  watch_init(w, r);
  w->stop_on_call = 1;
  if (r != NULL)
    tl->start_rc[la->i] = braid_signal_start(r, &w->s, SIGUSR1, watch_cb, w);
  /* Both watchers exist before the signal is sent. */
  test_barrier_wait(&tl->ready);
  if (r == NULL)
    return NULL;
  tl->run_rc[la->i] = braid_reactor_run(r);
  braid_reactor_destroy(r);
  return NULL;
}

static void t_two_reactors_two_threads(void **st) {
  (void)st;
  two_loops tl;
  memset(&tl, 0, sizeof tl);
  tl.run_rc[0] = tl.run_rc[1] = 1;
  assert_int_equal(test_barrier_init(&tl.ready, 3), 0);
  pthread_t th[2];
  loop_arg la[2] = {{&tl, 0}, {&tl, 1}};
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, signal_loop, &la[i]), 0);
  test_barrier_wait(&tl.ready);
  /* One delivery to the process; both reactors must see it. */
  assert_int_equal(kill(getpid(), SIGUSR1), 0);
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_join(th[i], NULL), 0);
  test_barrier_destroy(&tl.ready);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(tl.create_rc[i], 0);
    assert_int_equal(tl.start_rc[i], 0);
    assert_int_equal(tl.run_rc[i], 0);
    assert_int_equal(tl.w[i].calls, 1);
    assert_int_equal(tl.w[i].last_signo, SIGUSR1);
    assert_int_equal(tl.w[i].wrong_thread, 0);
  }
}

/* ------------------------------------------------------------------------
 * Dispositions
 * ------------------------------------------------------------------------ */

static volatile sig_atomic_t g_own_handler_hits;
static void own_handler(int signo) {
  (void)signo;
  g_own_handler_hits++;
}

static void t_disposition_restored(void **st) {
  (void)st;
  struct sigaction mine, saved;
  memset(&mine, 0, sizeof mine);
  mine.sa_handler = own_handler;
  sigemptyset(&mine.sa_mask);
  assert_int_equal(sigaction(SIGUSR2, &mine, &saved), 0);
  g_own_handler_hits = 0;

  braid_reactor_t *r = new_reactor();
  braid_reactor_t *r2 = new_reactor();
  watch a, b, c;
  watch_init(&a, r);
  watch_init(&b, r);
  watch_init(&c, r2);
  assert_int_equal(braid_signal_start(r, &a.s, SIGUSR2, watch_cb, &a), 0);
  assert_ptr_not_equal(current_handler(SIGUSR2), own_handler);
  assert_int_equal(braid_signal_start(r, &b.s, SIGUSR2, watch_cb, &b), 0);
  assert_int_equal(braid_signal_start(r2, &c.s, SIGUSR2, watch_cb, &c), 0);
  /* braid owns the signal while any watcher in the process exists. */
  assert_int_equal(braid_signal_stop(&a.s), 0);
  assert_ptr_not_equal(current_handler(SIGUSR2), own_handler);
  assert_int_equal(braid_signal_stop(&c.s), 0);
  assert_ptr_not_equal(current_handler(SIGUSR2), own_handler);
  assert_int_equal(raise(SIGUSR2), 0);
  assert_int_equal(g_own_handler_hits, 0);
  assert_int_equal(braid_signal_stop(&b.s), 0);
  /* The last one stopped: the previous handler is back and works. */
  assert_ptr_equal(current_handler(SIGUSR2), own_handler);
  assert_int_equal(raise(SIGUSR2), 0);
  assert_int_equal(g_own_handler_hits, 1);

  /* Destroying a reactor stops its watchers and restores too. */
  assert_int_equal(braid_signal_start(r, &a.s, SIGUSR2, watch_cb, &a), 0);
  assert_ptr_not_equal(current_handler(SIGUSR2), own_handler);
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_ptr_equal(current_handler(SIGUSR2), own_handler);
  /* The watcher is inactive and reusable on another reactor. */
  assert_int_equal(braid_signal_stop(&a.s), BRAID_EINVAL);
  a.stop_on_call = 1;
  a.r = r2;
  assert_int_equal(braid_signal_start(r2, &a.s, SIGUSR2, watch_cb, &a), 0);
  assert_int_equal(raise(SIGUSR2), 0);
  assert_int_equal(braid_reactor_run(r2), 0);
  assert_int_equal(a.calls, 1);
  assert_ptr_equal(current_handler(SIGUSR2), own_handler);
  assert_int_equal(braid_reactor_destroy(r2), 0);

  assert_int_equal(sigaction(SIGUSR2, &saved, NULL), 0);
}

/* ------------------------------------------------------------------------
 * Misuse
 * ------------------------------------------------------------------------ */

static void t_misuse(void **st) {
  (void)st;
  braid_reactor_t *r = new_reactor();
  braid_reactor_t *r2 = new_reactor();
  watch w;
  watch_init(&w, r);
  static const int bad[] = {0, -1, SIGKILL, SIGSTOP, SIGSEGV, SIGPIPE, 9999};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    void (*before)(int) =
        bad[i] > 0 && bad[i] < 64 ? current_handler(bad[i]) : NULL;
    assert_int_equal(braid_signal_start(r, &w.s, bad[i], watch_cb, &w),
                     BRAID_EINVAL);
    if (before != NULL)
      assert_ptr_equal(current_handler(bad[i]), before);
  }
  assert_int_equal(braid_signal_start(NULL, &w.s, SIGUSR1, watch_cb, &w),
                   BRAID_EINVAL);
  assert_int_equal(braid_signal_start(r, NULL, SIGUSR1, watch_cb, &w),
                   BRAID_EINVAL);
  assert_int_equal(braid_signal_start(r, &w.s, SIGUSR1, NULL, &w),
                   BRAID_EINVAL);

  /* Stop when never started (zero-filled), NULL. */
  braid_signal_t z;
  memset(&z, 0, sizeof z);
  assert_int_equal(braid_signal_stop(&z), BRAID_EINVAL);
  assert_int_equal(braid_signal_stop(NULL), BRAID_EINVAL);

  /* A failed start left nothing behind: the reactor has nothing to do. */
  assert_int_equal(braid_reactor_run(r), 0);

  /* Double start: refused, on the same or another reactor or signal. */
  assert_int_equal(braid_signal_start(r, &w.s, SIGUSR1, watch_cb, &w), 0);
  assert_int_equal(braid_signal_start(r, &w.s, SIGUSR1, watch_cb, &w),
                   BRAID_EBUSY);
  assert_int_equal(braid_signal_start(r2, &w.s, SIGUSR2, watch_cb, &w),
                   BRAID_EBUSY);
  assert_int_equal(braid_signal_stop(&w.s), 0);
  /* Stop when inactive. */
  assert_int_equal(braid_signal_stop(&w.s), BRAID_EINVAL);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(braid_reactor_run(r2), 0);
  assert_int_equal(w.calls, 0);
  assert_int_equal(braid_reactor_destroy(r), 0);
  assert_int_equal(braid_reactor_destroy(r2), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_each_signal_delivered),
      cmocka_unit_test(t_sigchld_from_child),
      cmocka_unit_test(t_coalesced),
      cmocka_unit_test(t_late_watcher_sees_only_new),
      cmocka_unit_test(t_signal_from_other_thread),
      cmocka_unit_test(t_watcher_keeps_loop_alive),
      cmocka_unit_test(t_two_watchers_one_signal),
      cmocka_unit_test(t_callback_stops_sibling),
      cmocka_unit_test(t_two_reactors_two_threads),
      cmocka_unit_test(t_disposition_restored),
      cmocka_unit_test(t_misuse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif /* _WIN32 */
