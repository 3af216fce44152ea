/* braid: the log hook.
 *
 * braid writes nothing to stderr by itself. Everything it has to say goes
 * through a reactor's log handler; the default handler prints
 * "braid[LEVEL] domain: message" lines to stderr for BRAID_LOG_WARN and above.
 * An embedder replaces it with braid_reactor_set_log().
 */
#ifndef BRAID_LOG_H
#define BRAID_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum braid_log_level {
  BRAID_LOG_DEBUG = 0,
  BRAID_LOG_INFO = 1,
  BRAID_LOG_WARN = 2,
  BRAID_LOG_ERROR = 3
} braid_log_level;

/* A log handler. `domain` names the part of braid speaking ("reactor",
 * "poller", "http", "access", ...); `msg` is one line without a trailing
 * newline. Both are valid only during the call. Called on the thread that
 * logs, which is the reactor's thread except where a function says so. */
typedef void (*braid_log_cb)(void *arg, braid_log_level level,
                             const char *domain, const char *msg);

/* The default handler: writes WARN and ERROR lines to stderr (all levels
 * when the environment variable BRAID_DEBUG is set). */
void braid_log_default(void *arg, braid_log_level level, const char *domain,
                       const char *msg);

/* "DEBUG", "INFO", "WARN", "ERROR". */
const char *braid_log_level_name(braid_log_level level);

#ifdef __cplusplus
}
#endif
#endif
