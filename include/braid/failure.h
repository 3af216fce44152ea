/* braid: failures, the error half of a deferred's result.
 *
 * A failure is what Twisted's Failure is to a Deferred: it carries an error
 * domain (a string naming who defined the code: BRAID_FAILURE_DOMAIN for the
 * BRAID_E* codes, "myapp" for yours), an integer code, a one-line message,
 * and optionally the failure that caused it, so that a chain of "X failed
 * because Y failed" survives to whoever finally handles or logs it.
 *
 * Failures belong to a reactor (they come from its slab) and are reference
 * counted. Use them only on that reactor's thread.
 *
 * Ownership: braid_failure_new() returns one reference, owned by the caller.
 * Every function documented as "consuming" a failure takes that reference
 * over (braid_deferred_errback, braid_result_set_failure, and the `cause`
 * argument of braid_failure_new); anything else only borrows it. Take an
 * extra reference with braid_failure_ref() to keep one you were lent.
 *
 * Out of memory: braid_failure_new() returns NULL when the slab cannot grow,
 * and every function that consumes a failure treats NULL as the reactor's
 * preallocated "out of memory" failure (domain BRAID_FAILURE_DOMAIN, code
 * BRAID_ENOMEM), so that `braid_deferred_errback(d, braid_failure_new(...))`
 * is always correct and never needs a NULL check.
 */
#ifndef BRAID_FAILURE_H
#define BRAID_FAILURE_H

#include <stdbool.h>

#include "braid/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The domain of failures whose code is a BRAID_E* value. */
#define BRAID_FAILURE_DOMAIN "braid"

typedef struct braid_failure braid_failure_t;

/* A new failure with one reference. `domain` must be a string that lives as
 * long as the failure (a literal); NULL means BRAID_FAILURE_DOMAIN. `cause`
 * (may be NULL) is consumed. The message is printf-formatted; NULL fmt
 * means braid_strerror(code) for the braid domain and "error <code>"
 * otherwise. Messages longer than about 150 bytes are kept in a separate
 * allocation. Returns NULL only when out of memory (see above) or for a
 * NULL reactor; `cause` is released in both cases. */
braid_failure_t *braid_failure_new(braid_reactor_t *r, const char *domain,
                                   int code, braid_failure_t *cause,
                                   const char *fmt, ...)
#if defined(__MINGW32__) && !defined(__clang__)
    /* braid formats with mingw's C99 printf (__USE_MINGW_ANSI_STDIO), not
     * msvcrt's, so %zu and %lld are checked as on other systems (clang
     * checks printf that way on mingw already). */
    __attribute__((format(gnu_printf, 5, 6)))
#elif defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* Shorthand: a braid-domain failure for a BRAID_E* code with its standard
 * message. */
braid_failure_t *braid_failure_from_code(braid_reactor_t *r, int code);

/* Take one more reference (returns f, for chaining; NULL stays NULL). */
braid_failure_t *braid_failure_ref(braid_failure_t *f);

/* Drop one reference; the last one frees the failure and releases its
 * cause. Dropping a failure is how you "handle" it: nothing is logged. */
void braid_failure_unref(braid_failure_t *f);

const char *braid_failure_domain(const braid_failure_t *f);
int braid_failure_code(const braid_failure_t *f);
const char *braid_failure_message(const braid_failure_t *f);
/* The failure that caused this one (borrowed), or NULL. */
braid_failure_t *braid_failure_cause(const braid_failure_t *f);

/* Whether `f` is (domain, code): Twisted's Failure.check(). A NULL domain
 * means BRAID_FAILURE_DOMAIN; code 0 matches any code of the domain. Only
 * `f` itself is compared; see braid_failure_find for the cause chain. */
bool braid_failure_check(const braid_failure_t *f, const char *domain,
                         int code);

/* The first failure in the chain f, cause(f), cause(cause(f)), ... that
 * matches (domain, code) as braid_failure_check does, or NULL. Borrowed. */
braid_failure_t *braid_failure_find(const braid_failure_t *f,
                                    const char *domain, int code);

/* Write "message [domain code]; caused by: ..." for the whole chain into
 * buf (always NUL-terminated when size > 0). Returns the length the full
 * text needs, as snprintf does. */
int braid_failure_format(const braid_failure_t *f, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
