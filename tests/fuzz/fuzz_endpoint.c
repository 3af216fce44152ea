/* libFuzzer target for endpoint descriptions (braid_endpoint_parse), in
 * both the server and the client grammar.
 *
 * Input: byte 0 picks the grammar and the error buffer's size (0 to 63, so
 * truncation of the message is exercised); the rest is the description.
 * Checks: only 0 or BRAID_EINVAL; an error always writes a NUL-terminated,
 * non-empty message that fits; a success yields a sane endpoint that, when
 * written back as an all-"key=value" description with every ':' and '\'
 * escaped, parses to the same endpoint (so escaping and positional
 * arguments mean what the key=value forms mean). */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/endpoint.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* Append s to out with ':' and '\' escaped. */
static size_t put_escaped(char *out, size_t o, const char *s) {
  for (; *s != '\0'; s++) {
    if (*s == ':' || *s == '\\')
      out[o++] = '\\';
    out[o++] = *s;
  }
  return o;
}

static void roundtrip(const braid_endpoint_t *ep, bool server) {
  /* A part holds at most 255 bytes after unescaping, key included, so a
   * host that only fitted as a positional argument has no key=value
   * spelling: nothing to compare. */
  if (strlen(ep->host) + sizeof "interface=" > 256)
    return;
  char desc[1024];
  size_t o = 0;
  const char *type = ep->kind == BRAID_ENDPOINT_TCP    ? "tcp"
                     : ep->kind == BRAID_ENDPOINT_TCP6 ? "tcp6"
                                                       : "unix";
  o += (size_t)sprintf(desc, "%s", type);
  if (ep->kind == BRAID_ENDPOINT_UNIX) {
    o += (size_t)sprintf(desc + o, server ? ":address=" : ":path=");
    o = put_escaped(desc, o, ep->host);
  } else {
    o += (size_t)sprintf(desc + o, ":port=%u", (unsigned)ep->port);
    if (ep->host[0] != '\0' || !server) {
      o += (size_t)sprintf(desc + o, server ? ":interface=" : ":host=");
      o = put_escaped(desc, o, ep->host);
    }
    if (server && ep->reuse_port)
      o += (size_t)sprintf(desc + o, ":reuseport=1");
  }
  if (server && ep->backlog != 0)
    o += (size_t)sprintf(desc + o, ":backlog=%d", ep->backlog);
  if (!server && ep->timeout != 0)
    o += (size_t)sprintf(desc + o, ":timeout=%" PRIu64 ".%09" PRIu64,
                         ep->timeout / 1000000000u, ep->timeout % 1000000000u);
  desc[o] = '\0';
  braid_endpoint_t again;
  char err[256];
  int rc = braid_endpoint_parse(&again, desc, server, err, sizeof err);
  if (rc != 0)
    fprintf(stderr, "re-parse of '%s' failed: %s\n", desc, err);
  CHECK(rc == 0);
  CHECK(again.kind == ep->kind && again.port == ep->port &&
        strcmp(again.host, ep->host) == 0 && again.backlog == ep->backlog &&
        again.reuse_port == ep->reuse_port);
  /* Seconds go through a double: allow the last nanosecond to differ. */
  uint64_t a = again.timeout, b = ep->timeout;
  CHECK((a > b ? a - b : b - a) <= 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 600)
    return 0;
  bool server = data[0] & 1;
  size_t errlen = (data[0] >> 1) & 63;
  char *desc = malloc(size); /* exact size: the NUL is the last byte */
  CHECK(desc != NULL);
  memcpy(desc, data + 1, size - 1);
  desc[size - 1] = '\0';
  /* The error buffer, exactly errlen bytes, filled with a marker to see
   * what was written. */
  char *err = errlen ? malloc(errlen) : NULL;
  if (errlen)
    memset(err, 'X', errlen);
  braid_endpoint_t ep;
  memset(&ep, 0xA5, sizeof ep);
  int rc = braid_endpoint_parse(&ep, desc, server, err, errlen);
  CHECK(rc == 0 || rc == BRAID_EINVAL);
  if (rc == 0) {
    CHECK(ep.kind == BRAID_ENDPOINT_TCP || ep.kind == BRAID_ENDPOINT_TCP6 ||
          ep.kind == BRAID_ENDPOINT_UNIX);
    CHECK(memchr(ep.host, '\0', sizeof ep.host) != NULL);
    CHECK(ep.backlog >= 0 && ep.backlog <= 65535);
    if (ep.kind == BRAID_ENDPOINT_UNIX)
      CHECK(ep.host[0] != '\0' && ep.port == 0);
    else if (!server)
      CHECK(ep.host[0] != '\0');
    CHECK(server || (ep.backlog == 0 && !ep.reuse_port));
    CHECK(!server || ep.timeout == 0);
    if (errlen)
      CHECK(err[0] == 'X'); /* success writes no message */
    roundtrip(&ep, server);
  } else if (errlen) {
    char *nul = memchr(err, '\0', errlen);
    CHECK(nul != NULL);
    CHECK(errlen == 1 || nul != err); /* a message, truncated or not */
  }
  free(err);
  free(desc);
  return 0;
}
