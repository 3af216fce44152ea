/* Child processes and pipe transports (braid/process.h), on every POSIX
 * poller (BRAID_POLLER). BRAID_TEST_SMALL=1 scales the volume tests down
 * (sanitizers, valgrind). */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "braid/braid.h"
#include "braid/process.h"

static int small(void) {
  const char *s = getenv("BRAID_TEST_SMALL");
  return (s != NULL && *s == '1') || getenv("LD_PRELOAD") != NULL ||
         getenv("BRAID_UNDER_VALGRIND") != NULL;
}

static braid_reactor_t *new_reactor(void) {
  braid_reactor_t *r = NULL;
  assert_int_equal(braid_reactor_create(&r, NULL), 0);
  return r;
}

/* A protocol for one pipe: counts and checks what arrives, writes a
 * pattern on demand, records flow-control events. */
typedef struct pipe_peer {
  braid_protocol_t p;
  braid_transport_t *t;
  size_t received, sent, to_send, max_queued;
  int lost, lost_reason, eof, paused, pause_count;
  unsigned char expect; /* next pattern byte expected */
  int bad;
  char text[4096];
  size_t text_len;
} pipe_peer;

static unsigned char pattern_at(size_t i) { return (unsigned char)(i * 7u + (i >> 13)); }

static void peer_pump(pipe_peer *pp) {
  static unsigned char buf[65536];
  while (!pp->paused && pp->t != NULL && pp->sent < pp->to_send) {
    size_t n = pp->to_send - pp->sent;
    if (n > sizeof buf)
      n = sizeof buf;
    for (size_t i = 0; i < n; i++)
      buf[i] = pattern_at(pp->sent + i);
    assert_int_equal(braid_transport_write(pp->t, buf, n), 0);
    pp->sent += n;
    size_t q = braid_transport_write_queued(pp->t);
    if (q > pp->max_queued)
      pp->max_queued = q;
  }
  if (pp->t != NULL && pp->to_send > 0 && pp->sent == pp->to_send)
    braid_transport_shutdown_write(pp->t);
}

static void pp_made(braid_protocol_t *p, braid_transport_t *t) {
  pipe_peer *pp = BRAID_CONTAINER_OF(p, pipe_peer, p);
  pp->t = t;
  peer_pump(pp);
}
static void pp_data(braid_protocol_t *p, const void *d, size_t n) {
  pipe_peer *pp = BRAID_CONTAINER_OF(p, pipe_peer, p);
  const unsigned char *b = d;
  for (size_t i = 0; i < n; i++)
    if (b[i] != pattern_at(pp->received + i))
      pp->bad = 1;
  size_t room = sizeof pp->text - 1 - pp->text_len;
  memcpy(pp->text + pp->text_len, d, n < room ? n : room);
  pp->text_len += n < room ? n : room;
  pp->text[pp->text_len] = 0;
  pp->received += n;
}
static void pp_lost(braid_protocol_t *p, int reason) {
  pipe_peer *pp = BRAID_CONTAINER_OF(p, pipe_peer, p);
  pp->lost++;
  pp->lost_reason = reason;
  pp->t = NULL;
}
static void pp_pause(braid_protocol_t *p) {
  pipe_peer *pp = BRAID_CONTAINER_OF(p, pipe_peer, p);
  pp->paused = 1;
  pp->pause_count++;
}
static void pp_resume(braid_protocol_t *p) {
  pipe_peer *pp = BRAID_CONTAINER_OF(p, pipe_peer, p);
  pp->paused = 0;
  peer_pump(pp);
}
static const braid_protocol_ops pp_ops = {
    .connection_made = pp_made,
    .data_received = pp_data,
    .connection_lost = pp_lost,
    .pause_writing = pp_pause,
    .resume_writing = pp_resume,
};

static void peer_init(pipe_peer *pp) {
  memset(pp, 0, sizeof *pp);
  pp->p.ops = &pp_ops;
}

typedef struct ended {
  int calls, status;
} ended;
static void on_ended(braid_process_t *p, int status, void *arg) {
  (void)p;
  ended *e = arg;
  e->calls++;
  e->status = status;
}

static braid_process_t *spawn(braid_reactor_t *r, char *const *argv,
                              pipe_peer *in, pipe_peer *out, ended *e) {
  braid_process_options o;
  memset(&o, 0, sizeof o);
  o.file = argv[0];
  o.argv = argv;
  if (in != NULL) {
    o.stdio[0].kind = BRAID_STDIO_PIPE;
    o.stdio[0].proto = &in->p;
  }
  if (out != NULL) {
    o.stdio[1].kind = BRAID_STDIO_PIPE;
    o.stdio[1].proto = &out->p;
  }
  o.stdio[2].kind = BRAID_STDIO_INHERIT;
  o.ended = on_ended;
  o.arg = e;
  braid_process_t *p = NULL;
  assert_int_equal(braid_process_spawn(r, &o, &p), 0);
  assert_non_null(p);
  return p;
}

/* cat echoes a large volume back; the writer follows the flow-control
 * marks, so the write queue stays bounded. */
static void test_cat_roundtrip(void **state) {
  (void)state;
  braid_reactor_t *r = new_reactor();
  pipe_peer in, out;
  peer_init(&in);
  peer_init(&out);
  in.to_send = small() ? (4u << 20) : (100u << 20);
  ended e = {0, -100};
  char *argv[] = {"cat", NULL};
  spawn(r, argv, &in, &out, &e);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(e.calls, 1);
  assert_int_equal(e.status, 0);
  assert_int_equal(out.received, in.to_send);
  assert_int_equal(out.bad, 0);
  assert_true(in.pause_count > 0);
  /* The default high mark is far below the volume: the queue stayed near
   * it (one 64 KiB write past the mark at most). */
  assert_true(in.max_queued < (1u << 20));
  assert_int_equal(in.lost, 1);
  assert_int_equal(out.lost, 1);
  braid_reactor_destroy(r);
}

static void test_exit_code(void **state) {
  (void)state;
  braid_reactor_t *r = new_reactor();
  ended e = {0, -100};
  char *argv[] = {"sh", "-c", "exit 3", NULL};
  braid_process_t *p = spawn(r, argv, NULL, NULL, &e);
  braid_deferred_t d;
  assert_int_equal(braid_process_deferred(p, &d), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(e.calls, 1);
  assert_int_equal(e.status, 3);
  braid_reactor_destroy(r);
}

static void test_killed_by_signal(void **state) {
  (void)state;
  braid_reactor_t *r = new_reactor();
  ended e = {0, -100};
  char *argv[] = {"sleep", "30", NULL};
  braid_process_t *p = spawn(r, argv, NULL, NULL, &e);
  assert_int_equal(braid_process_kill(p, SIGKILL), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(e.calls, 1);
  assert_int_equal(e.status, -SIGKILL);
  braid_reactor_destroy(r);
}

/* The child closes its stdout at once and lives on: the parent sees the
 * end of input, then the exit. */
static void test_closes_stdout_early(void **state) {
  (void)state;
  braid_reactor_t *r = new_reactor();
  pipe_peer out;
  peer_init(&out);
  ended e = {0, -100};
  char *argv[] = {"sh", "-c", "exec 1>&-; sleep 0.2; exit 5", NULL};
  spawn(r, argv, NULL, &out, &e);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(out.lost, 1);
  assert_int_equal(out.received, 0);
  assert_int_equal(e.status, 5);
  braid_reactor_destroy(r);
}

/* process.h: writing to a pipe whose reader is gone fails the transport
 * with BRAID_EPIPE, never SIGPIPE (whose default action would end this
 * test's process). The child closes its stdin; the parent writes after
 * that. */
static void write_late(braid_timer_t *t, void *arg) {
  (void)t;
  pipe_peer *in = arg;
  in->to_send = 65536;
  peer_pump(in);
}

static void test_reader_gone_epipe(void **state) {
  (void)state;
  void (*old)(int) = signal(SIGPIPE, SIG_DFL);
  braid_reactor_t *r = new_reactor();
  pipe_peer in;
  peer_init(&in);
  ended e = {0, -100};
  char *argv[] = {"sh", "-c", "exec 0<&-; sleep 0.5; exit 0", NULL};
  spawn(r, argv, &in, NULL, &e);
  braid_timer_t t = BRAID_TIMER_INIT;
  assert_int_equal(braid_timer_start(r, &t, BRAID_MSEC(200), write_late, &in), 0);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(in.lost, 1);
  assert_int_equal(in.lost_reason, BRAID_EPIPE);
  assert_int_equal(e.calls, 1);
  assert_int_equal(e.status, 0);
  braid_reactor_destroy(r);
  signal(SIGPIPE, old);
}

/* A child that never reads while the parent writes: pause_writing fires
 * and the queue stops growing; the child can still be killed. */
typedef struct stuck {
  pipe_peer *in;
  braid_process_t *p;
  int checks;
} stuck;
static void stuck_check(braid_timer_t *t, void *arg) {
  (void)t;
  stuck *s = arg;
  s->checks++;
  assert_int_equal(s->in->paused, 1);
  assert_true(s->in->max_queued < (1u << 20));
  assert_int_equal(braid_process_kill(s->p, SIGTERM), 0);
}
static void test_never_reads(void **state) {
  (void)state;
  braid_reactor_t *r = new_reactor();
  pipe_peer in;
  peer_init(&in);
  in.to_send = 64u << 20;
  ended e = {0, -100};
  char *argv[] = {"sleep", "30", NULL};
  stuck s = {&in, NULL, 0};
  s.p = spawn(r, argv, &in, NULL, &e);
  braid_timer_t t = BRAID_TIMER_INIT;
  braid_timer_start(r, &t, BRAID_MSEC(200), stuck_check, &s);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(s.checks, 1);
  assert_true(in.pause_count >= 1);
  assert_true(in.sent < in.to_send);
  assert_int_equal(e.status, -SIGTERM);
  braid_reactor_destroy(r);
}

static void test_many_children(void **state) {
  (void)state;
  braid_reactor_t *r = new_reactor();
  int n = small() ? 100 : 1000;
  ended *e = calloc((size_t)n, sizeof *e);
  char *argv[] = {"sh", "-c", "exit 7", NULL};
  for (int i = 0; i < n; i++)
    spawn(r, argv, NULL, NULL, &e[i]);
  assert_int_equal(braid_reactor_run(r), 0);
  for (int i = 0; i < n; i++) {
    assert_int_equal(e[i].calls, 1);
    assert_int_equal(e[i].status, 7);
  }
  free(e);
  braid_reactor_destroy(r);
}

/* A child braid did not start ends while braid reaps its own: its status
 * stays for the test's own waitpid. */
static void test_foreign_child_not_reaped(void **state) {
  (void)state;
  pid_t foreign = fork();
  assert_true(foreign >= 0);
  if (foreign == 0)
    _exit(42);
  braid_reactor_t *r = new_reactor();
  ended e = {0, -100};
  char *argv[] = {"sh", "-c", "sleep 0.2; exit 1", NULL};
  spawn(r, argv, NULL, NULL, &e);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_int_equal(e.status, 1);
  int st = 0;
  assert_int_equal(waitpid(foreign, &st, 0), foreign);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 42);
  braid_reactor_destroy(r);
}

/* Every descriptor the parent holds beyond 0-2 (the poller's, the
 * wakeup's, the other pipes') is checked from inside the child. */
static int fd_open_before[1000];

static void test_no_fd_leak(void **state) {
  (void)state;
  /* Descriptors open before braid made any (the test runner's, a
   * sanitizer's) are not braid's to close. */
  memset(fd_open_before, 0, sizeof fd_open_before);
  DIR *d0 = opendir("/proc/self/fd");
  assert_non_null(d0);
  struct dirent *de0;
  while ((de0 = readdir(d0)) != NULL) {
    int fd = atoi(de0->d_name);
    if (fd >= 0 && fd < 1000 && fd != dirfd(d0))
      fd_open_before[fd] = 1;
  }
  closedir(d0);
  braid_reactor_t *r = new_reactor();
  pipe_peer out, keep;
  peer_init(&out);
  peer_init(&keep);
  ended e1 = {0, -100}, e2 = {0, -100};
  char *argv1[] = {"sleep", "1", NULL};
  braid_process_t *p1 = spawn(r, argv1, &keep, NULL, &e1);
  char list[2048] = "";
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  struct dirent *de;
  int nfds = 0;
  while ((de = readdir(d)) != NULL) {
    int fd = atoi(de->d_name);
    if (de->d_name[0] == '.' || fd <= 2 || fd == dirfd(d) || fd >= 1000 ||
        fd_open_before[fd])
      continue;
    size_t l = strlen(list);
    snprintf(list + l, sizeof list - l, " %d", fd);
    nfds++;
  }
  closedir(d);
  assert_true(nfds >= 2); /* at least the poller and the other pipe */
  char script[2300];
  snprintf(script, sizeof script,
           "for n in%s; do [ -e /proc/self/fd/$n ] && echo LEAK $n; done; "
           "echo done",
           list);
  char *argv2[] = {"sh", "-c", script, NULL};
  spawn(r, argv2, NULL, &out, &e2);
  braid_process_kill(p1, SIGKILL);
  assert_int_equal(braid_reactor_run(r), 0);
  assert_string_equal(out.text, "done\n");
  assert_int_equal(e2.status, 0);
  braid_reactor_destroy(r);
}

static void test_bad_args(void **state) {
  (void)state;
  braid_reactor_t *r = new_reactor();
  braid_process_options o;
  memset(&o, 0, sizeof o);
  braid_process_t *p = (braid_process_t *)1;
  assert_int_equal(braid_process_spawn(r, &o, &p), BRAID_EINVAL);
  assert_null(p);
  char *argv[] = {"/nonexistent/braid-test-program", NULL};
  o.file = argv[0];
  o.argv = argv;
  ended e = {0, -100};
  o.ended = on_ended;
  o.arg = &e;
  int rc = braid_process_spawn(r, &o, &p);
  if (getenv("BRAID_UNDER_VALGRIND") != NULL && rc == 0) {
    /* Valgrind runs glibc's vfork-style posix_spawn as a plain fork, so
     * the failed exec cannot reach the parent: the child exits 127
     * instead (the shell's "command not found"), and that is checked. */
    assert_int_equal(braid_reactor_run(r), 0);
    assert_int_equal(e.calls, 1);
    assert_int_equal(e.status, 127);
  } else {
    assert_int_equal(rc, BRAID_ENOENT);
    assert_null(p);
    assert_int_equal(e.calls, 0);
  }
  assert_int_equal(braid_pipe_open(r, -1, -1, NULL, NULL), BRAID_EINVAL);
  braid_reactor_destroy(r);
}

/* io_uring: pipes are not transports there yet (a WRITEV to a pipe whose
 * reader is gone raises SIGPIPE in the submitting thread); everything
 * says BRAID_ENOTSUP, checked here, and the rest is skipped. */
static int pipes_supported(void) {
  braid_reactor_t *r = new_reactor();
  braid_protocol_t p = {&pp_ops, NULL, NULL};
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  braid_transport_t *t;
  int rc = braid_pipe_open(r, fds[0], -1, &p, &t);
  if (rc == BRAID_ENOTSUP) {
    char *argv[] = {"true", NULL};
    braid_process_options o;
    memset(&o, 0, sizeof o);
    o.file = argv[0];
    o.argv = argv;
    braid_process_t *pr;
    assert_int_equal(braid_process_spawn(r, &o, &pr), BRAID_ENOTSUP);
    close(fds[0]);
  } else {
    assert_int_equal(rc, 0);
  }
  close(fds[1]);
  braid_reactor_destroy(r);
  return rc == 0;
}

int main(void) {
  if (!pipes_supported()) {
    printf("pipes and processes: BRAID_ENOTSUP on this poller, skipped\n");
    return 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cat_roundtrip),
      cmocka_unit_test(test_exit_code),
      cmocka_unit_test(test_killed_by_signal),
      cmocka_unit_test(test_closes_stdout_early),
      cmocka_unit_test(test_reader_gone_epipe),
      cmocka_unit_test(test_never_reads),
      cmocka_unit_test(test_many_children),
      cmocka_unit_test(test_foreign_child_not_reaped),
      cmocka_unit_test(test_no_fd_leak),
      cmocka_unit_test(test_bad_args),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
