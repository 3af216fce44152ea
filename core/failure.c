/* Failures: error domain + code + message + optional cause, reference
 * counted, allocated from the reactor's slab (see braid/failure.h). */
#include <stdio.h>
#include <string.h>

#include "core/deferred_internal.h"

#define BRAID__IMMORTAL UINT32_MAX

void braid__failure_init_oom(braid__defer_state *ds, braid_reactor_t *r) {
  struct braid_failure *f = &ds->oom;
  memset(f, 0, sizeof *f);
  f->magic = BRAID__LIVE_FAILURE;
  f->refs = BRAID__IMMORTAL;
  f->code = BRAID_ENOMEM;
  f->domain = BRAID_FAILURE_DOMAIN;
  f->r = r;
  snprintf(f->inline_msg, sizeof f->inline_msg, "%s",
           braid_strerror(BRAID_ENOMEM));
  f->msg = f->inline_msg;
}

static braid_failure_t *braid__failure_vnew(braid_reactor_t *r,
                                            const char *domain, int code,
                                            braid_failure_t *cause,
                                            const char *fmt, va_list ap) {
  braid__defer_state *ds = r != NULL ? braid__ds(r) : NULL;
  struct braid_failure *f =
      ds != NULL ? braid__slab_alloc(&ds->failures) : NULL;
  if (f == NULL) {
    braid_failure_unref(cause);
    return NULL;
  }
  f->cause = cause;
  f->magic = BRAID__LIVE_FAILURE;
  f->refs = 1;
  f->code = code;
  /* Remembered so that destroy can tell the cancellations it causes
   * (expected) from failures left over from the run (lost errors). */
  f->flags = ds->tearing_down ? BRAID__F_TEARDOWN : 0u;
  f->domain = domain != NULL ? domain : BRAID_FAILURE_DOMAIN;
  f->r = r;
  f->msg = f->inline_msg;
  int n;
  if (fmt != NULL) {
    va_list ap2;
    va_copy(ap2, ap);
    n = vsnprintf(f->inline_msg, sizeof f->inline_msg, fmt, ap);
    /* Long messages get their own allocation rather than being cut: a
     * truncated error message is the one you needed the end of. If that
     * allocation fails, the truncated inline copy stays. */
    if (n >= (int)sizeof f->inline_msg) {
      char *big = braid_malloc((size_t)n + 1);
      if (big != NULL) {
        vsnprintf(big, (size_t)n + 1, fmt, ap2);
        f->msg = big;
      }
    }
    va_end(ap2);
  } else if (strcmp(f->domain, BRAID_FAILURE_DOMAIN) == 0) {
    snprintf(f->inline_msg, sizeof f->inline_msg, "%s", braid_strerror(code));
  } else {
    snprintf(f->inline_msg, sizeof f->inline_msg, "error %d", code);
  }
  return f;
}

braid_failure_t *braid_failure_new(braid_reactor_t *r, const char *domain,
                                   int code, braid_failure_t *cause,
                                   const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  braid_failure_t *f = braid__failure_vnew(r, domain, code, cause, fmt, ap);
  va_end(ap);
  return f;
}

braid_failure_t *braid_failure_from_code(braid_reactor_t *r, int code) {
  return braid_failure_new(r, BRAID_FAILURE_DOMAIN, code, NULL, NULL);
}

braid_failure_t *braid_failure_ref(braid_failure_t *f) {
  if (f != NULL && f->refs != BRAID__IMMORTAL)
    f->refs++;
  return f;
}

void braid_failure_unref(braid_failure_t *f) {
  /* Iterative over the cause chain, so that a long chain of causes does
   * not recurse. */
  while (f != NULL) {
    if (f->refs == BRAID__IMMORTAL || f->magic != BRAID__LIVE_FAILURE)
      return;
    if (--f->refs > 0)
      return;
    braid_failure_t *cause = f->cause;
    if (f->msg != f->inline_msg)
      braid_free(f->msg);
    f->magic = BRAID__DEAD;
    braid__slab_free(&f->r->defer->failures, f);
    f = cause;
  }
}

const char *braid_failure_domain(const braid_failure_t *f) {
  return f != NULL ? f->domain : NULL;
}
int braid_failure_code(const braid_failure_t *f) {
  return f != NULL ? f->code : 0;
}
const char *braid_failure_message(const braid_failure_t *f) {
  return f != NULL ? f->msg : NULL;
}
braid_failure_t *braid_failure_cause(const braid_failure_t *f) {
  return f != NULL ? f->cause : NULL;
}

bool braid_failure_check(const braid_failure_t *f, const char *domain,
                         int code) {
  if (f == NULL)
    return false;
  if (domain == NULL)
    domain = BRAID_FAILURE_DOMAIN;
  /* Pointers first (literals usually match), then text: the same literal
   * can have two addresses across a shared library boundary. */
  if (f->domain != domain && strcmp(f->domain, domain) != 0)
    return false;
  return code == 0 || f->code == code;
}

braid_failure_t *braid_failure_find(const braid_failure_t *f,
                                    const char *domain, int code) {
  for (; f != NULL; f = f->cause)
    if (braid_failure_check(f, domain, code))
      return (braid_failure_t *)f;
  return NULL;
}

int braid_failure_format(const braid_failure_t *f, char *buf, size_t size) {
  size_t need = 0;
  if (size > 0)
    buf[0] = '\0';
  for (int first = 1; f != NULL; f = f->cause, first = 0) {
    size_t off = need < size ? need : size;
    int n = snprintf(buf + off, size - off, "%s%s [%s %d]",
                     first ? "" : "; caused by: ", f->msg, f->domain, f->code);
    if (n < 0)
      return n;
    need += (size_t)n;
  }
  return (int)need;
}

static void braid__failure_teardown_one(void *obj, void *arg) {
  struct braid_failure *f = obj;
  (void)arg;
  if (f->magic == BRAID__LIVE_FAILURE && f->msg != f->inline_msg)
    braid_free(f->msg);
  f->magic = BRAID__DEAD;
}

void braid__failures_teardown(braid__defer_state *ds) {
  /* Failures that users still hold references to die with the slab; only
   * their separately allocated messages need freeing. */
  braid__slab_each(&ds->failures, braid__failure_teardown_one, NULL);
}
