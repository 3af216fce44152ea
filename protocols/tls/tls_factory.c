/* The server-side wrapping factory (braid_tls_wrap_factory): it runs TLS
 * on every connection a listener accepts and builds the user's protocol
 * with the inner factory once the handshake succeeded (tls_conn.c,
 * braid__tls_handshake_done).
 *
 * Ownership of handshakes: a connection whose handshake is in progress
 * has no user protocol yet, so nothing the user could reach owns it. The
 * factory does: it lists those connections, and freeing it drops them
 * (their lower transports are aborted, the inner factory is never called
 * for them), so that the inner factory and whatever owns it may go away
 * right after. A connection leaves the list when its handshake ends, one
 * way or the other. */
#include "braid/alloc.h"
#include "braid/error.h"
#include "braid/tls.h"
#include "protocols/tls/tls_internal.h"

void braid__tls_unlink(braid__tls *s) {
  braid__tls_factory *tf = s->tf;
  if (tf == NULL)
    return;
  if (s->hs_prev != NULL)
    s->hs_prev->hs_next = s->hs_next;
  else
    tf->hs = s->hs_next;
  if (s->hs_next != NULL)
    s->hs_next->hs_prev = s->hs_prev;
  s->hs_prev = s->hs_next = NULL;
  s->tf = NULL;
  tf->nhs--;
}

static braid_protocol_t *braid__tls_build(braid_factory_t *f,
                                          const braid_addr_t *peer) {
  braid__tls_factory *tf = BRAID_CONTAINER_OF(f, braid__tls_factory, f);
  /* The factory has no reactor; the listener's comes with the transport,
   * so the TLS transport gets it in its lower connection_made. */
  braid__tls *s = braid__tls_new(NULL, tf->ctx, NULL, NULL);
  if (s == NULL)
    return NULL;
  s->inner = tf->inner;
  s->peer = *peer;
  s->tf = tf;
  s->hs_next = tf->hs;
  if (tf->hs != NULL)
    tf->hs->hs_prev = s;
  tf->hs = s;
  tf->nhs++;
  return &s->lower_p;
}

int braid_tls_wrap_factory(braid_factory_t *inner, braid_tls_context_t *ctx,
                           braid_factory_t **out) {
  if (inner == NULL || ctx == NULL || out == NULL ||
      ctx->role != BRAID_TLS_SERVER)
    return BRAID_EINVAL;
  braid__tls_factory *tf = braid_calloc(1, sizeof *tf);
  if (tf == NULL)
    return BRAID_ENOMEM;
  tf->f.build = braid__tls_build;
  tf->inner = inner;
  tf->ctx = ctx;
  braid__tls_ctx_ref(ctx);
  *out = &tf->f;
  return 0;
}

size_t braid_tls_factory_handshakes(const braid_factory_t *f) {
  if (f == NULL || f->build != braid__tls_build)
    return 0;
  return BRAID_CONTAINER_OF((braid_factory_t *)f, braid__tls_factory, f)->nhs;
}

void braid_tls_factory_free(braid_factory_t *f) {
  if (f == NULL || f->build != braid__tls_build)
    return;
  braid__tls_factory *tf = BRAID_CONTAINER_OF(f, braid__tls_factory, f);
  /* Drop every handshake still in progress: they never reach `inner`. The
   * lower transports report connection_lost later (never inside abort),
   * and each connection frees itself then; there is no user protocol to
   * tell. */
  while (tf->hs != NULL) {
    braid__tls *s = tf->hs;
    braid__tls_unlink(s);
    braid__tls_drop(s);
  }
  braid__tls_ctx_unref(tf->ctx);
  braid_free(tf);
}
