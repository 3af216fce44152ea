/* The runner's services to its commands (bin/runner.h): option parsing,
 * messages, the reactor and service tree, and the run with its graceful
 * drain on SIGTERM / SIGINT. */
#include "bin/runner.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bin/runner_internal.h"

/* ------------------------------------------------------------------------
 * Messages
 * ------------------------------------------------------------------------ */

const char *braid_runner_prefix(const braid_runner_t *rt) {
  return rt->prefix;
}

bool braid_runner_quiet(const braid_runner_t *rt) {
  return rt->quiet;
}

static void vreport(const braid_runner_t *rt, const char *fmt, va_list ap) {
  fprintf(stderr, "%s: ", rt->prefix);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
}

/* The synopsis (the usage's first line) and where the rest is. */
static void usage_hint(const braid_runner_t *rt) {
  const char *u = rt->cmd->usage;
  size_t n = strcspn(u, "\n");
  fprintf(stderr, "%.*s\n", (int)n, u);
  fprintf(stderr, "Run '%s --help' for the options.\n", rt->prefix);
}

int braid_runner_usage_error(braid_runner_t *rt, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(rt, fmt, ap);
  va_end(ap);
  usage_hint(rt);
  return BRAID_EXIT_USAGE;
}

int braid_runner_error(braid_runner_t *rt, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(rt, fmt, ap);
  va_end(ap);
  return BRAID_EXIT_FAILURE;
}

void braid_runner_log(braid_runner_t *rt, braid_log_level level,
                      const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (rt->r != NULL)
    braid_reactor_log(rt->r, level, "runner", "%s", msg);
  else
    braid__runner_log_cb(rt, level, "runner", msg);
}

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* The reactor's log handler: the access log (one line per request, a
 * record rather than a diagnostic) to stdout whatever the level, the rest
 * to stderr from --log-level up, with the command's prefix. */
void braid__runner_log_cb(void *arg, braid_log_level level, const char *domain,
                          const char *msg) {
  braid_runner_t *rt = arg;
  if (strcmp(domain, "access") == 0) {
    fputs(msg, stdout);
    fputc('\n', stdout);
    return;
  }
  if (level < rt->level)
    return;
  const char *ln = (unsigned)level < 4 ? level_names[level] : "?";
  fprintf(stderr, "%s: %s: %s: %s\n", rt->prefix, ln, domain, msg);
}

/* ------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------ */

static int parse_log_level(const char *v, void *out, char *why, size_t n) {
  for (int i = 0; i < 4; i++)
    if (strcmp(v, level_names[i]) == 0) {
      *(braid_log_level *)out = (braid_log_level)i;
      return 0;
    }
  if (strcmp(v, "warning") == 0) {
    *(braid_log_level *)out = BRAID_LOG_WARN;
    return 0;
  }
  snprintf(why, n, "is not one of debug, info, warn, error");
  return -1;
}

/* A number of seconds: decimal, fractions allowed, no sign, no hex, no
 * "inf" or "nan" (strtod would take them all). */
static int parse_seconds(const char *v, double *out, char *why, size_t n) {
  const char *p = v;
  int digits = 0;
  while (*p >= '0' && *p <= '9')
    p++, digits++;
  if (*p == '.')
    for (p++; *p >= '0' && *p <= '9'; p++)
      digits++;
  if (digits == 0 || *p != '\0') {
    snprintf(why, n, "is not a number of seconds");
    return -1;
  }
  errno = 0;
  *out = strtod(v, NULL);
  if (errno != 0 || *out > BRAID_OPT_SECONDS_MAX) {
    snprintf(why, n, "is more than %.0f seconds", BRAID_OPT_SECONDS_MAX);
    return -1;
  }
  return 0;
}

static int seconds_to_ns(double s, uint64_t *out) {
  *out = (uint64_t)(s * 1e9 + 0.5);
  return 0;
}

static int parse_positive_seconds(const char *v, void *out, char *why,
                                  size_t n) {
  double s;
  if (parse_seconds(v, &s, why, n) < 0)
    return -1;
  if (!(s > 0) || (uint64_t)(s * 1e9 + 0.5) == 0) {
    snprintf(why, n, "is not a number of seconds above 0");
    return -1;
  }
  return seconds_to_ns(s, out);
}

static int parse_drain(const char *v, void *out, char *why, size_t n) {
  double s;
  if (parse_seconds(v, &s, why, n) < 0)
    return -1;
  return seconds_to_ns(s, out);
}

static int parse_count(const char *v, uint64_t max, uint64_t *out, char *why,
                       size_t n) {
  uint64_t x = 0;
  const char *p = v;
  if (*p == '\0') {
    snprintf(why, n, "is not a whole number");
    return -1;
  }
  for (; *p != '\0'; p++) {
    if (*p < '0' || *p > '9') {
      snprintf(why, n, "is not a whole number");
      return -1;
    }
    unsigned d = (unsigned)(*p - '0');
    if (x > (UINT64_MAX - d) / 10) {
      snprintf(why, n, "is too large");
      return -1;
    }
    x = x * 10 + d;
  }
  if (max != 0 && x > max) {
    snprintf(why, n, "is more than %llu", (unsigned long long)max);
    return -1;
  }
  *out = x;
  return 0;
}

static int add_listen(const char *v, void *out, char *why, size_t n) {
  braid_runner_t *rt = out;
  if (rt->nlisten == BRAID_RUNNER_LISTEN_MAX) {
    snprintf(why, n, "is one too many (at most %d --listen)",
             BRAID_RUNNER_LISTEN_MAX);
    return -1;
  }
  rt->listen[rt->nlisten++] = v;
  return 0;
}

/* The common options. `out` is filled in per runner (see common_table). */
enum { C_HELP, C_QUIET, C_LOG, C_LISTEN, C_DRAIN, C_N };

static void common_table(braid_runner_t *rt, bool *help, braid_option *t) {
  memset(t, 0, C_N * sizeof *t);
  t[C_HELP] = (braid_option){"--help", BRAID_OPT_FLAG, help, 0, NULL};
  t[C_QUIET] = (braid_option){"--quiet", BRAID_OPT_FLAG, &rt->quiet, 0, NULL};
  t[C_LOG] = (braid_option){"--log-level", BRAID_OPT_CUSTOM, &rt->level, 0,
                            parse_log_level};
  t[C_LISTEN] = (braid_option){"--listen", BRAID_OPT_CUSTOM, rt, 0, add_listen};
  t[C_DRAIN] = (braid_option){"--drain-timeout", BRAID_OPT_CUSTOM,
                              &rt->drain_ns, 0, parse_drain};
}

static const braid_option *find_opt(const braid_option *t, size_t n,
                                    const char *name, size_t len) {
  for (size_t i = 0; t != NULL && i < n && t[i].name != NULL; i++)
    if (strlen(t[i].name) == len && memcmp(t[i].name, name, len) == 0)
      return &t[i];
  return NULL;
}

static int apply(braid_runner_t *rt, const braid_option *o, const char *v) {
  char why[128] = "";
  int rc = 0;
  switch (o->kind) {
  case BRAID_OPT_FLAG:
    *(bool *)o->out = true;
    return 0;
  case BRAID_OPT_STRING:
    if (*v == '\0') {
      snprintf(why, sizeof why, "is empty");
      rc = -1;
    } else {
      *(const char **)o->out = v;
    }
    break;
  case BRAID_OPT_SECONDS:
    rc = parse_positive_seconds(v, o->out, why, sizeof why);
    break;
  case BRAID_OPT_COUNT:
    rc = parse_count(v, o->max, o->out, why, sizeof why);
    break;
  case BRAID_OPT_CUSTOM:
    rc = o->parse(v, o->out, why, sizeof why);
    break;
  }
  if (rc < 0)
    return braid_runner_usage_error(rt, "%s: \"%s\" %s", o->name, v,
                                    why[0] != '\0' ? why : "is not valid");
  return 0;
}

void braid__runner_print_help(const braid_command *cmd) {
  fputs(cmd->usage, stdout);
  printf("\ncommon options:\n");
  if (cmd->flags & BRAID_CMD_SERVE) {
    printf("  --listen ENDPOINT      where to listen; repeat it to listen on "
           "several\n"
           "                         (default %s). Endpoints: tcp:8080,\n"
           "                         tcp:port=8080:interface=127.0.0.1,\n"
           "                         tcp6:port=8080:interface=\\:\\:1, "
           "unix:/run/x.sock\n"
           "                         (removed again at exit), tls:... "
           "(braid/endpoint.h)\n",
           cmd->listen_default != NULL ? cmd->listen_default : "none");
    printf("  --drain-timeout SEC    on SIGTERM or SIGINT, stop accepting and "
           "give open\n"
           "                         connections this long to finish, then "
           "cut them\n"
           "                         and exit 0 (default %.0f; 0 cuts at "
           "once). A\n"
           "                         second signal cuts them at once\n",
           (double)BRAID__RUNNER_DRAIN_DEFAULT / 1e9);
  }
  printf("  --log-level LEVEL      debug, info, warn or error: what goes to "
         "stderr\n"
         "                         (default info)\n"
         "  --quiet                do not print where the command listens\n"
         "  --help                 this text\n");
  printf("\nexit status: 0 done (also after a signal), 1 failure, 2 bad "
         "command line\n");
}

int braid_runner_parse(braid_runner_t *rt, int argc, char **argv,
                       const braid_option *opts) {
  bool help = false;
  braid_option common[C_N];
  common_table(rt, &help, common);
  size_t ncommon = (rt->cmd->flags & BRAID_CMD_SERVE) ? C_N : C_LISTEN;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0) {
      help = true;
      continue;
    }
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0')
      return braid_runner_usage_error(rt, "unexpected argument \"%s\"", a);
    const char *eq = strchr(a, '=');
    size_t len = eq != NULL ? (size_t)(eq - a) : strlen(a);
    const braid_option *o = find_opt(opts, SIZE_MAX, a, len);
    if (o == NULL)
      o = find_opt(common, ncommon, a, len);
    if (o == NULL)
      return braid_runner_usage_error(rt, "unknown option \"%.*s\"", (int)len,
                                      a);
    const char *v = NULL;
    if (o->kind == BRAID_OPT_FLAG) {
      if (eq != NULL)
        return braid_runner_usage_error(rt, "%s takes no value", o->name);
    } else if (eq != NULL) {
      v = eq + 1;
    } else if (i + 1 < argc) {
      v = argv[++i];
    } else {
      return braid_runner_usage_error(rt, "%s needs a value", o->name);
    }
    int rc = apply(rt, o, v);
    if (rc != 0)
      return rc;
  }
  if (help) {
    braid__runner_print_help(rt->cmd);
    return BRAID_EXIT_OK;
  }
  braid_reactor_options ro = {0};
  ro.log_cb = braid__runner_log_cb;
  ro.log_arg = rt;
  int rc = braid_reactor_create(&rt->r, &ro);
  if (rc < 0) {
    rt->r = NULL;
    return braid_runner_error(rt, "cannot create the reactor: %s",
                              braid_strerror(rc));
  }
  rc = braid_service_group_create(rt->r, NULL, &rt->root);
  if (rc < 0) {
    rt->root = NULL;
    return braid_runner_error(rt, "cannot create the service tree: %s",
                              braid_strerror(rc));
  }
  return BRAID_RUNNER_GO;
}

/* ------------------------------------------------------------------------
 * Reactor, services, endpoints
 * ------------------------------------------------------------------------ */

braid_reactor_t *braid_runner_reactor(braid_runner_t *rt) {
  return rt->r;
}

braid_service_t *braid_runner_services(braid_runner_t *rt) {
  return rt->root;
}

const char *const *braid_runner_endpoints(braid_runner_t *rt, const char *dflt,
                                          size_t *n) {
  if (rt->nlisten > 0) {
    *n = rt->nlisten;
    return rt->listen;
  }
  rt->dflt[0] = dflt != NULL ? dflt : rt->cmd->listen_default;
  *n = rt->dflt[0] != NULL ? 1 : 0;
  return rt->dflt;
}

int braid_runner_listen(braid_runner_t *rt, const char *endpoint,
                        braid_factory_t *f,
                        const braid_service_listener_options *opts,
                        const char *banner) {
  if (rt->nbanners == BRAID_RUNNER_LISTEN_MAX)
    return braid_runner_error(rt, "at most %d listeners",
                              BRAID_RUNNER_LISTEN_MAX);
  char err[256] = "";
  braid_service_t *s;
  int rc = braid_service_listener_create(rt->r, NULL, endpoint, f, opts, &s,
                                         err, sizeof err);
  if (rc == 0 && (rc = braid_service_add(rt->root, s)) < 0)
    braid_service_destroy(s);
  /* A description that does not parse came from the command line. */
  if (rc == BRAID_EINVAL && err[0] != '\0')
    return braid_runner_usage_error(rt, "--listen: %s", err);
  if (rc < 0)
    return braid_runner_error(rt, "%s",
                              err[0] != '\0' ? err : braid_strerror(rc));
  rt->banners[rt->nbanners].s = s;
  rt->banners[rt->nbanners].text = banner;
  rt->nbanners++;
  return 0;
}

/* ------------------------------------------------------------------------
 * Running and stopping
 * ------------------------------------------------------------------------ */

static const char *signal_name(int signo) {
  switch (signo) {
  case SIGTERM:
    return "SIGTERM";
  case SIGINT:
    return "SIGINT";
  default:
    return "a signal";
  }
}

static void stopped_cb(braid_deferred_t d, braid_result_t *res, void *arg) {
  (void)d;
  braid_runner_t *rt = arg;
  if (!braid_result_ok(res))
    braid_result_set(res, NULL, NULL);
  if (rt->root == NULL)
    return; /* the tree is being destroyed: the run is over */
  uint64_t cut = braid_service_aborted(rt->root);
  if (cut > 0 && !rt->hurried)
    braid_runner_log(rt, BRAID_LOG_WARN,
                     "drain deadline: %llu connection%s cut",
                     (unsigned long long)cut, cut == 1 ? "" : "s");
  braid_reactor_stop(rt->r);
}

static void on_signal(braid_signal_t *s, int signo, unsigned count, void *arg) {
  (void)s;
  braid_runner_t *rt = arg;
  /* Deliveries that came faster than the loop turned are coalesced into
   * one call with count > 1: the second signal was sent. */
  rt->signals += count;
  if (rt->signals == 1) {
    size_t open = braid_service_connections(rt->root);
    if (open == 0)
      braid_runner_log(rt, BRAID_LOG_INFO, "%s: stopping", signal_name(signo));
    else
      braid_runner_log(rt, BRAID_LOG_INFO,
                       "%s: stopping: no new connections; %zu open "
                       "connection%s %s up to %.3g s to finish (a second "
                       "signal cuts them)",
                       signal_name(signo), open, open == 1 ? "" : "s",
                       open == 1 ? "has" : "have", (double)rt->drain_ns / 1e9);
    braid_deferred_t d = BRAID_DEFERRED_INIT;
    int rc = braid_service_stop(rt->root, rt->drain_ns, &d);
    if (rc == 0 && braid_deferred_add_both(d, stopped_cb, rt) == 0)
      return;
    braid_runner_log(rt, BRAID_LOG_WARN, "cannot drain: %s",
                     braid_strerror(rc < 0 ? rc : BRAID_ENOMEM));
  } else {
    braid_runner_log(rt, BRAID_LOG_INFO, "%s again: stopping now",
                     signal_name(signo));
  }
  rt->hurried = true;
  braid_service_stop(rt->root, 0, NULL);
  braid_reactor_stop(rt->r);
}

static void print_banners(braid_runner_t *rt) {
  for (size_t i = 0; i < rt->nbanners; i++) {
    braid_addr_t a;
    char buf[160];
    if (braid_service_listener_addr(rt->banners[i].s, &a) != 0 ||
        braid_addr_format(&a, buf, sizeof buf) <= 0)
      continue;
    printf("%s: %s%s (poller %s)\n", rt->prefix,
           rt->banners[i].text != NULL ? rt->banners[i].text : "listening on ",
           buf, braid_reactor_poller(rt->r));
  }
  fflush(stdout);
}

int braid_runner_run(braid_runner_t *rt) {
  int status = BRAID_EXIT_OK;
  /* Watch the signals before anything listens, so a stop sent as soon
   * as the address is printed finds the handler in place. */
  braid_signal_t sint = {0}, sterm = {0};
  int rc = braid_signal_start(rt->r, &sint, SIGINT, on_signal, rt);
  bool have_int = rc == 0, have_term = false;
  if (rc == 0) {
    rc = braid_signal_start(rt->r, &sterm, SIGTERM, on_signal, rt);
    have_term = rc == 0;
  }
  if (rc < 0)
    braid_runner_log(rt, BRAID_LOG_WARN,
                     "cannot watch SIGINT and SIGTERM (%s): no graceful stop",
                     braid_strerror(rc));
  char err[256] = "";
  rc = braid_service_start(rt->root, err, sizeof err);
  if (rc < 0) {
    status =
        braid_runner_error(rt, "%s", err[0] != '\0' ? err : braid_strerror(rc));
  } else {
    if (!rt->quiet)
      print_banners(rt);
    rc = braid_reactor_run(rt->r);
    if (rc < 0)
      status = braid_runner_error(rt, "%s", braid_strerror(rc));
  }
  if (have_int)
    braid_signal_stop(&sint);
  if (have_term)
    braid_signal_stop(&sterm);
  /* What is still open is cut (its protocols get connection_lost, some
   * of them when the reactor is destroyed); the command may free its
   * factories once this returns. */
  braid__runner_finish_tree(rt);
  return status;
}

void braid__runner_finish_tree(braid_runner_t *rt) {
  /* rt->root is cleared first: destroying the tree fails a pending stop
   * deferred, and stopped_cb must not look at a tree on its way out. */
  braid_service_t *root = rt->root;
  rt->root = NULL;
  braid_service_destroy(root);
}

void braid__runner_init(braid_runner_t *rt, const braid_command *cmd) {
  memset(rt, 0, sizeof *rt);
  rt->cmd = cmd;
  snprintf(rt->prefix, sizeof rt->prefix, "braid %s", cmd->name);
  rt->level = BRAID_LOG_INFO;
  rt->drain_ns = BRAID__RUNNER_DRAIN_DEFAULT;
}

void braid__runner_finish(braid_runner_t *rt) {
  braid__runner_finish_tree(rt);
  if (rt->r != NULL)
    braid_reactor_destroy(rt->r);
  rt->r = NULL;
}
