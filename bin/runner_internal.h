/* The runner's own state, shared by bin/main.c and bin/runner.c only:
 * commands see bin/runner.h. */
#ifndef BRAID_BIN_RUNNER_INTERNAL_H
#define BRAID_BIN_RUNNER_INTERNAL_H

#include "bin/runner.h"

#define BRAID__RUNNER_DRAIN_DEFAULT BRAID_SEC(10)

struct braid_runner {
  const braid_command *cmd;
  char prefix[64]; /* "braid NAME" */
  braid_reactor_t *r;
  braid_service_t *root;
  /* Common options. */
  braid_log_level level;
  bool quiet;
  uint64_t drain_ns;
  const char *listen[BRAID_RUNNER_LISTEN_MAX];
  size_t nlisten;
  const char *dflt[1]; /* braid_runner_endpoints without --listen */
  /* What braid_runner_run prints once the listeners listen. */
  struct {
    braid_service_t *s;
    const char *text;
  } banners[BRAID_RUNNER_LISTEN_MAX];
  size_t nbanners;
  /* Stopping. */
  unsigned signals; /* SIGINT and SIGTERM deliveries seen */
  bool hurried;     /* cut at once (second signal, or no drain possible) */
};

void braid__runner_init(braid_runner_t *rt, const braid_command *cmd);
/* Destroy what the runner holds (the tree if braid_runner_run did not,
 * then the reactor). */
void braid__runner_finish(braid_runner_t *rt);
void braid__runner_finish_tree(braid_runner_t *rt);
void braid__runner_print_help(const braid_command *cmd);
void braid__runner_log_cb(void *arg, braid_log_level level, const char *domain,
                          const char *msg);

#endif
