/* Endpoint internals shared with the TLS layer (protocols/tls), which
 * parses its own "tls:"/"ssl:" descriptions with the same splitter and
 * hands the TCP part back to braid_endpoint_listen/connect. */
#ifndef BRAID_CORE_ENDPOINT_INTERNAL_H
#define BRAID_CORE_ENDPOINT_INTERNAL_H

#include <string.h>

#include "braid/endpoint.h"

#define BRAID__EP_MAX_PARTS 16
#define BRAID__EP_PART_MAX 256

typedef struct braid__ep_part {
  char key[32]; /* empty for a positional argument */
  char value[BRAID__EP_PART_MAX];
} braid__ep_part;

/* Split "type:a:k=v:..." on unescaped ':'; "\:" and "\\" are escapes. */
int braid__ep_split(const char *desc, char *type, size_t typelen,
                    braid__ep_part *parts, int *nparts, char *err,
                    size_t errlen);

/* "tls:" and "ssl:" descriptions: implemented by the TLS layer, or by its
 * stub (BRAID_ENOTSUP) in a build without TLS. */
int braid__tls_endpoint_listen(braid_reactor_t *r, const char *desc,
                               braid_factory_t *f, braid_listener_t **out,
                               char *err, size_t errlen);
int braid__tls_endpoint_connect(braid_reactor_t *r, const char *desc,
                                braid_protocol_t *p, char *err, size_t errlen);
/* Called once, from braid_listener_close (also when the reactor is
 * destroyed), after the listener stopped accepting: a "tls:" listener
 * frees its wrapping factory there, which aborts the handshakes in
 * progress, so the factory given to braid_endpoint_listen is never called
 * after the close, as with "tcp:". */
void braid__listener_on_close(braid_listener_t *l, void (*cb)(void *arg),
                              void *arg);

static inline int braid__ep_is_tls(const char *desc) {
  return desc != NULL &&
         (strncmp(desc, "tls:", 4) == 0 || strncmp(desc, "ssl:", 4) == 0);
}

#endif
