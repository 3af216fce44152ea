#include <stdio.h>
#include <stdlib.h>

#include "core/internal.h"

const char *braid_log_level_name(braid_log_level level) {
  switch (level) {
  case BRAID_LOG_DEBUG:
    return "DEBUG";
  case BRAID_LOG_INFO:
    return "INFO";
  case BRAID_LOG_WARN:
    return "WARN";
  case BRAID_LOG_ERROR:
    return "ERROR";
  }
  return "?";
}

void braid_log_default(void *arg, braid_log_level level, const char *domain,
                       const char *msg) {
  BRAID__UNUSED(arg);
  if (level < BRAID_LOG_WARN && getenv("BRAID_DEBUG") == NULL)
    return;
  fprintf(stderr, "braid[%s] %s: %s\n", braid_log_level_name(level), domain,
          msg);
}

void braid_reactor_set_log(braid_reactor_t *r, braid_log_cb cb, void *arg) {
  if (r == NULL)
    return;
  r->log_cb = cb != NULL ? cb : braid_log_default;
  r->log_arg = cb != NULL ? arg : NULL;
}

void braid_reactor_log(braid_reactor_t *r, braid_log_level level,
                       const char *domain, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (r == NULL)
    braid_log_default(NULL, level, domain, line);
  else
    r->log_cb(r->log_arg, level, domain, line);
}
