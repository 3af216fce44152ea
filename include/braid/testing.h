/* braid: test doubles (Twisted's twisted.internet.testing, in C).
 *
 * These are a supported, installed part of braid: protocol code can be
 * tested deterministically, without sockets or sleeping.
 *
 * The deterministic clock: create a reactor with BRAID_REACTOR_MANUAL_CLOCK
 * (or braid_testing_reactor_create()). Its time starts at 0 and moves only
 * when braid_clock_advance() is called, which fires every timer that has
 * come due, in deadline order, exactly as the loop would.
 */
#ifndef BRAID_TESTING_H
#define BRAID_TESTING_H

#include "braid/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A reactor with a manual clock on the default poller. */
int braid_testing_reactor_create(braid_reactor_t **out);

/* Move the manual clock forward by `delta` ns, firing due timers as it
 * goes: a timer scheduled by a callback during the advance fires within
 * the same advance if its deadline falls inside it. Queued call-soons run
 * after the timers. BRAID_EINVAL if the reactor has no manual clock. */
int braid_clock_advance(braid_reactor_t *r, uint64_t delta);

/* Run every queued call-soon (including ones they queue, up to `limit`
 * passes) without waiting for I/O. Returns the number of callbacks run. */
size_t braid_testing_flush(braid_reactor_t *r, unsigned limit);

#ifdef __cplusplus
}
#endif
#endif
