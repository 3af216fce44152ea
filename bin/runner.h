/* braid: the runner (the `braid` program) and its subcommands.
 *
 * `braid NAME [OPTIONS]` runs the command NAME, as `twistd NAME` runs a
 * Twisted plugin. A command is one braid_command, defined in one file
 * (bin/cmd_NAME.c, or protocols/NAME/braid_cmd_NAME.c for a protocol
 * module) as
 *
 *   const braid_command braid_cmd_NAME = {
 *       .name = "NAME",
 *       .summary = "one line for braid --help",
 *       .usage = "usage: braid NAME [OPTIONS]\n...its own options...\n",
 *       .flags = BRAID_CMD_SERVE,
 *       .main = NAME_main,
 *   };
 *
 * and listed once in bin/meson.build (the `braid_commands` list, name and
 * source file), from which the build generates the table bin/main.c reads.
 *
 * What the runner does so that commands need not:
 *   - `braid --help` lists the commands; `braid help NAME` and
 *     `braid NAME --help` print the command's usage followed by the common
 *     options; `braid --version`;
 *   - the common options: --log-level LEVEL, --quiet, --help, and for a
 *     command with BRAID_CMD_SERVE --listen ENDPOINT (repeatable) and
 *     --drain-timeout SEC;
 *   - one error prefix ("braid NAME: "), errors that name the bad value,
 *     and the exit codes: 0 done, 1 runtime failure, 2 usage error;
 *   - a reactor, a service tree (braid/service.h) whose root group the
 *     command fills, a log handler (diagnostics to stderr at or above the
 *     --log-level, the "access" domain to stdout);
 *   - braid_runner_run(): start the tree, say where it listens, run until
 *     SIGTERM or SIGINT, then drain (stop accepting, let open connections
 *     finish for up to --drain-timeout, cut what is left) and return 0; a
 *     second signal cuts everything at once. Unix socket files the
 *     listeners created are removed as they close (braid/transport.h).
 *
 * A command's main, in order: braid_runner_parse() with its option table;
 * its own set-up; braid_runner_listen() once per endpoint (or other
 * services added to braid_runner_services()); braid_runner_run(); its own
 * clean-up (the tree is gone by then, so factories may be freed); return
 * the status. Each call returns what main should return when it fails.
 */
#ifndef BRAID_BIN_RUNNER_H
#define BRAID_BIN_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/braid.h"
#include "braid/service.h"

typedef struct braid_runner braid_runner_t;

/* printf checks, as braid_reactor_log has them (mingw's C99 printf is
 * gnu_printf to gcc). */
#if defined(__MINGW32__) && !defined(__clang__)
#define BRAID_RUNNER_PRINTF(f, a) __attribute__((format(gnu_printf, f, a)))
#elif defined(__GNUC__) || defined(__clang__)
#define BRAID_RUNNER_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define BRAID_RUNNER_PRINTF(f, a)
#endif

/* Exit statuses. */
#define BRAID_EXIT_OK 0
#define BRAID_EXIT_FAILURE 1 /* could not do the job: bind, files, ... */
#define BRAID_EXIT_USAGE 2   /* bad command line */

/* braid_runner_parse: the command line is good, go on. */
#define BRAID_RUNNER_GO (-1)

/* The most --listen options (and listeners) a command takes. */
#define BRAID_RUNNER_LISTEN_MAX 16

/* The command takes --listen and --drain-timeout. */
#define BRAID_CMD_SERVE 1u

typedef struct braid_command {
  const char *name;    /* "web": braid web ... */
  const char *summary; /* one line, for braid --help */
  /* For braid NAME --help: a synopsis line ("usage: braid NAME ..."), what
   * the command does, and its own options; the runner appends the common
   * ones. The first line is repeated after usage errors. */
  const char *usage;
  unsigned flags;             /* BRAID_CMD_* */
  const char *listen_default; /* BRAID_CMD_SERVE: the --listen default,
                                 named in the common options' help */
  int (*main)(int argc, char **argv, braid_runner_t *rt);
} braid_command;

/* ------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------ */

typedef enum braid_opt_kind {
  BRAID_OPT_FLAG,    /* bool *: set to true; takes no value */
  BRAID_OPT_STRING,  /* const char **: the value (the last one given) */
  BRAID_OPT_SECONDS, /* uint64_t *: a number of seconds above 0 and at most
                        BRAID_OPT_SECONDS_MAX (fractions allowed), in ns */
  BRAID_OPT_COUNT,   /* uint64_t *: a whole number, 0 to `max` (0: no
                        bound beyond UINT64_MAX) */
  BRAID_OPT_CUSTOM,  /* parse(value, out, why, whylen): 0, or -1 with why
                        completing `--NAME: "VALUE" ...` */
} braid_opt_kind;

#define BRAID_OPT_SECONDS_MAX 1000000.0

typedef struct braid_option {
  const char *name; /* "--path"; NULL ends the table */
  braid_opt_kind kind;
  void *out;
  uint64_t max; /* BRAID_OPT_COUNT */
  int (*parse)(const char *value, void *out, char *why, size_t whylen);
} braid_option;

/* Parse argv (the arguments after the command's name) against `opts` (may
 * be NULL) and the common options: "--name VALUE" and "--name=VALUE".
 * Returns BRAID_RUNNER_GO, or the status main should return: 0 after
 * --help (the usage was printed), 2 after a usage error (reported as
 * `braid NAME: ...` with the synopsis), 1 when the reactor cannot be
 * created. From GO on, braid_runner_reactor() and braid_runner_services()
 * are ready. */
int braid_runner_parse(braid_runner_t *rt, int argc, char **argv,
                       const braid_option *opts);

/* ------------------------------------------------------------------------
 * What a command gets
 * ------------------------------------------------------------------------ */

braid_reactor_t *braid_runner_reactor(braid_runner_t *rt);

/* The root group: add services to it before braid_runner_run(). */
braid_service_t *braid_runner_services(braid_runner_t *rt);

/* "braid NAME", the prefix of every message. */
const char *braid_runner_prefix(const braid_runner_t *rt);

/* --quiet was given: print nothing but errors (and the access log). */
bool braid_runner_quiet(const braid_runner_t *rt);

/* The --listen values in order; when none was given, `dflt` alone (NULL:
 * the command's listen_default). */
const char *const *braid_runner_endpoints(braid_runner_t *rt, const char *dflt,
                                          size_t *n);

/* Report a usage error: "braid NAME: MESSAGE", then the synopsis. Returns
 * BRAID_EXIT_USAGE. */
int braid_runner_usage_error(braid_runner_t *rt, const char *fmt, ...)
    BRAID_RUNNER_PRINTF(2, 3);

/* Report a failure: "braid NAME: MESSAGE". Returns BRAID_EXIT_FAILURE. */
int braid_runner_error(braid_runner_t *rt, const char *fmt, ...)
    BRAID_RUNNER_PRINTF(2, 3);

/* Log through the reactor's handler (domain "runner"). */
void braid_runner_log(braid_runner_t *rt, braid_log_level level,
                      const char *fmt, ...) BRAID_RUNNER_PRINTF(3, 4);

/* Add a listener service on `endpoint` building protocols with `f` (which
 * must outlive braid_runner_run) to the root group. opts may be NULL; its
 * drain callback is how the protocol hears of a graceful stop. Once it
 * listens, braid_runner_run() prints "braid NAME: BANNER ADDRESS (poller
 * P)" unless --quiet, e.g. banner "serving /srv on https://". Returns 0,
 * or 1 after reporting a bad endpoint (the description names the bad
 * part). */
int braid_runner_listen(braid_runner_t *rt, const char *endpoint,
                        braid_factory_t *f,
                        const braid_service_listener_options *opts,
                        const char *banner);

/* Start the services and run until a signal stops them (see the top of
 * this file), then destroy the service tree. Returns 0, or 1 when the
 * services could not start (reported, e.g. "braid web: listener
 * tcp:8080: address already in use") or the reactor failed. */
int braid_runner_run(braid_runner_t *rt);

#endif
