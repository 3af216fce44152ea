/* Timers: a 4-ary min-heap in one array.
 *
 * Why a 4-ary heap and not a timing wheel: braid's timers have nanosecond
 * deadlines and arbitrary spans (a 30 ms connect timeout next to a one-hour
 * idle timeout), which a wheel handles only with several levels and
 * cascading; a heap gives exact ordering, O(log n) insert and cancel, and
 * O(1) "next deadline" for the poller's timeout. Four children per node
 * halve the depth of a binary heap and put the children of a node in one
 * 64-byte cache line (4 slots x 16 bytes). Each slot carries the deadline
 * beside the timer pointer so that sifting compares without dereferencing
 * timers; the timer struct (32 bytes, caller-owned) only records its slot.
 * A pending timer costs 32 + 16 = 48 bytes and no allocation of its own:
 * the array grows by doubling and is reused.
 *
 * Ties are broken by a 32-bit insertion sequence number, so timers with
 * equal deadlines fire in the order they were scheduled.
 */
#include <string.h>

#include "core/internal.h"

/* Final states kept in braid_timer.state_; live ones are slot + 1. */
#define BRAID__T_IDLE 0u
#define BRAID__T_FIRED 0xffffffffu
#define BRAID__T_CANCELLED 0xfffffffeu
#define BRAID__T_MAX_SLOTS 0xfffffff0u

static inline int braid__slot_less(const braid__heap_slot *a,
                                   const braid__heap_slot *b) {
  if (a->deadline != b->deadline)
    return a->deadline < b->deadline;
  return (int32_t)(a->timer->seq_ - b->timer->seq_) < 0;
}

static inline void braid__heap_place(braid__heap_slot *heap, uint32_t i,
                                     braid__heap_slot s) {
  heap[i] = s;
  s.timer->state_ = i + 1;
}

static void braid__heap_up(braid__heap_slot *heap, uint32_t i) {
  braid__heap_slot s = heap[i];
  while (i > 0) {
    uint32_t parent = (i - 1) / 4;
    if (!braid__slot_less(&s, &heap[parent]))
      break;
    braid__heap_place(heap, i, heap[parent]);
    i = parent;
  }
  braid__heap_place(heap, i, s);
}

static void braid__heap_down(braid__heap_slot *heap, uint32_t len,
                             uint32_t i) {
  braid__heap_slot s = heap[i];
  for (;;) {
    uint32_t first = i * 4 + 1;
    if (first >= len)
      break;
    uint32_t end = first + 4 < len ? first + 4 : len;
    uint32_t best = first;
    for (uint32_t c = first + 1; c < end; c++)
      if (braid__slot_less(&heap[c], &heap[best]))
        best = c;
    if (!braid__slot_less(&heap[best], &s))
      break;
    braid__heap_place(heap, i, heap[best]);
    i = best;
  }
  braid__heap_place(heap, i, s);
}

static void braid__heap_remove(braid_reactor_t *r, uint32_t i) {
  uint32_t last = --r->heap_len;
  if (i == last)
    return;
  braid__heap_slot moved = r->heap[last];
  braid__heap_place(r->heap, i, moved);
  if (i > 0 && braid__slot_less(&moved, &r->heap[(i - 1) / 4]))
    braid__heap_up(r->heap, i);
  else
    braid__heap_down(r->heap, r->heap_len, i);
}

static int braid__heap_grow(braid_reactor_t *r) {
  uint32_t cap = r->heap_cap ? r->heap_cap * 2 : 64;
  if (cap > BRAID__T_MAX_SLOTS || cap < r->heap_cap)
    return BRAID_ENOMEM;
  braid__heap_slot *h = braid_realloc(r->heap, (size_t)cap * sizeof *h);
  if (h == NULL)
    return BRAID_ENOMEM;
  r->heap = h;
  r->heap_cap = cap;
  return 0;
}

static inline int braid__timer_pending(const braid_timer_t *t) {
  return t->state_ != BRAID__T_IDLE && t->state_ < BRAID__T_CANCELLED;
}

/* The deadline for a timer scheduled now with `delay`. Inside a timer pass a
 * zero delay would make a timer due in the pass that is running; it is
 * pushed 1 ns later so that it fires on the next pass instead, and a timer
 * that reschedules itself with delay 0 cannot starve the loop. */
static uint64_t braid__deadline(const braid_reactor_t *r, uint64_t delay) {
  if (delay == 0 && r->in_timer_pass)
    delay = 1;
  uint64_t d = r->now + delay;
  if (d < r->now)
    d = UINT64_MAX; /* saturate */
  return d;
}

static int braid__timer_schedule(braid_reactor_t *r, braid_timer_t *t,
                                 uint64_t deadline) {
  if (r->heap_len == r->heap_cap) {
    int rc = braid__heap_grow(r);
    if (rc < 0)
      return rc;
  }
  t->seq_ = r->timer_seq++;
  uint32_t i = r->heap_len++;
  r->heap[i].deadline = deadline;
  r->heap[i].timer = t;
  braid__heap_up(r->heap, i);
  return 0;
}

int braid_timer_start(braid_reactor_t *r, braid_timer_t *t, uint64_t delay,
                      braid_timer_cb cb, void *arg) {
  if (r == NULL || t == NULL || cb == NULL)
    return BRAID_EINVAL;
  if (braid__timer_pending(t))
    return BRAID_EBUSY;
  t->reactor_ = r;
  t->cb_ = cb;
  t->arg_ = arg;
  int rc = braid__timer_schedule(r, t, braid__deadline(r, delay));
  if (rc < 0)
    t->state_ = BRAID__T_IDLE;
  return rc;
}

static int braid__timer_check(const braid_timer_t *t) {
  if (t == NULL || t->reactor_ == NULL || t->state_ == BRAID__T_IDLE)
    return BRAID_EINVAL;
  if (t->state_ == BRAID__T_FIRED)
    return BRAID_EALREADY;
  if (t->state_ == BRAID__T_CANCELLED)
    return BRAID_ECANCELED;
  return 0;
}

int braid_timer_cancel(braid_timer_t *t) {
  int rc = braid__timer_check(t);
  if (rc < 0)
    return rc;
  braid__heap_remove(t->reactor_, t->state_ - 1);
  t->state_ = BRAID__T_CANCELLED;
  return 0;
}

/* Move a pending timer to a new deadline in place: one sift instead of a
 * remove and an insert. It takes a new sequence number, so it fires after
 * timers already scheduled for the same instant. */
static void braid__timer_move(braid_timer_t *t, uint64_t deadline) {
  braid_reactor_t *r = t->reactor_;
  uint32_t i = t->state_ - 1;
  uint64_t old = r->heap[i].deadline;
  r->heap[i].deadline = deadline;
  t->seq_ = r->timer_seq++;
  if (deadline < old)
    braid__heap_up(r->heap, i);
  else
    braid__heap_down(r->heap, r->heap_len, i);
}

int braid_timer_reset(braid_timer_t *t, uint64_t delay) {
  int rc = braid__timer_check(t);
  if (rc < 0)
    return rc;
  braid__timer_move(t, braid__deadline(t->reactor_, delay));
  return 0;
}

int braid_timer_delay(braid_timer_t *t, int64_t delta) {
  int rc = braid__timer_check(t);
  if (rc < 0)
    return rc;
  uint64_t d = t->reactor_->heap[t->state_ - 1].deadline;
  if (delta < 0) {
    uint64_t back = (uint64_t)0 - (uint64_t)delta; /* safe for INT64_MIN */
    d = back > d ? 0 : d - back;
  } else
    d = d + (uint64_t)delta < d ? UINT64_MAX : d + (uint64_t)delta;
  braid__timer_move(t, d);
  return 0;
}

bool braid_timer_active(const braid_timer_t *t) {
  return t != NULL && t->reactor_ != NULL && braid__timer_pending(t);
}

uint64_t braid_timer_deadline(const braid_timer_t *t) {
  if (!braid_timer_active(t))
    return 0;
  return t->reactor_->heap[t->state_ - 1].deadline;
}

size_t braid_reactor_timer_count(const braid_reactor_t *r) {
  return r != NULL ? r->heap_len : 0;
}

/* Fire every timer due at `now`, in (deadline, seq) order. A timer that a
 * callback schedules with zero delay lands 1 ns past `now` (see
 * braid__deadline), so it waits for the next pass. */
void braid__timers_run(braid_reactor_t *r, uint64_t now) {
  r->in_timer_pass = 1;
  while (r->heap_len > 0) {
    braid__heap_slot top = r->heap[0];
    if (top.deadline > now)
      break;
    braid_timer_t *t = top.timer;
    braid__heap_remove(r, 0);
    t->state_ = BRAID__T_FIRED;
    r->depth++;
    t->cb_(t, t->arg_);
    r->depth--;
  }
  r->in_timer_pass = 0;
}

int braid__timers_next(const braid_reactor_t *r, uint64_t *deadline) {
  if (r->heap_len == 0)
    return 0;
  *deadline = r->heap[0].deadline;
  return 1;
}

/* Reactor teardown: pending timers are dropped, and left in the cancelled
 * state so that a later cancel by their owner is defined. */
void braid__timers_clear(braid_reactor_t *r) {
  for (uint32_t i = 0; i < r->heap_len; i++)
    r->heap[i].timer->state_ = BRAID__T_CANCELLED;
  r->heap_len = 0;
  braid_free(r->heap);
  r->heap = NULL;
  r->heap_cap = 0;
}
