/* Timers: a 4-ary min-heap in one array.
 *
 * Why a 4-ary heap and not a timing wheel: braid's timers have nanosecond
 * deadlines and arbitrary spans (a 30 ms connect timeout next to a one-hour
 * idle timeout), which a wheel handles only with several levels and
 * cascading; a heap gives exact ordering, O(log n) insert and cancel, and
 * O(1) "next deadline" for the poller's timeout. Four children per node
 * halve the depth of a binary heap and put the children of a node in one
 * 64-byte cache line (4 slots x 16 bytes; the array is placed so that
 * they do, see braid__heap_grow). Each slot carries the deadline
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

static inline int braid__seq_before(uint32_t a, uint32_t b) {
  return (int32_t)(a - b) < 0;
}

static inline int braid__slot_less(const braid__heap_slot *a,
                                   const braid__heap_slot *b) {
  if (a->deadline != b->deadline)
    return a->deadline < b->deadline;
  return braid__seq_before(a->timer->seq_, b->timer->seq_);
}

static inline void braid__heap_place(braid__heap_slot *heap, uint32_t i,
                                     braid__heap_slot s) {
  heap[i] = s;
  s.timer->state_ = i + 1;
}

#if defined(__GNUC__) || defined(__clang__)
#define BRAID__PREFETCH(p) __builtin_prefetch(p)
#else
#define BRAID__PREFETCH(p) ((void)(p))
#endif

/* Sift slot i up. `newest` says that its timer holds the newest sequence
 * number (it was just scheduled or moved), so it sorts after every equal
 * deadline already in the heap and a tie ends the climb without reading
 * the parent's timer. */
static void braid__heap_up(braid__heap_slot *heap, uint32_t i, int newest) {
  braid__heap_slot s = heap[i];
  while (i > 0) {
    uint32_t parent = (i - 1) / 4;
    uint64_t pd = heap[parent].deadline;
    if (s.deadline > pd)
      break;
    if (s.deadline == pd &&
        (newest || !braid__seq_before(s.timer->seq_,
                                      heap[parent].timer->seq_)))
      break;
    braid__heap_place(heap, i, heap[parent]);
    i = parent;
  }
  braid__heap_place(heap, i, s);
}

/* Sift slot i down. This is the loop that firing and cancelling spend
 * their time in, and it is written for the memory system: a level's four
 * children share one cache line (see braid__heap_grow), the next level's
 * candidate lines are prefetched while this level is compared, and when
 * children tie on the deadline their timers' sequence numbers are loaded
 * independently of one another, so the cache misses on those timers
 * overlap instead of queueing behind each comparison. Ties are the common
 * case, not a corner: every timer given the same delay in one loop
 * iteration has the same deadline, because "now" is cached. */
static void braid__heap_down(braid__heap_slot *heap, uint32_t len,
                             uint32_t i) {
  braid__heap_slot s = heap[i];
  /* The sinking slot's own sequence number is read only on a tie with it:
   * it usually comes from the bottom of the heap, so its timer is cold
   * and its deadline rarely ties with the children's. */
  uint32_t s_seq = 0;
  int have_s_seq = 0;
  for (;;) {
    uint32_t first = i * 4 + 1;
    if (first >= len)
      break;
    uint32_t n = len - first < 4 ? len - first : 4;
    const braid__heap_slot *c = heap + first;
    for (uint32_t k = 0; k < n; k++) {
      uint32_t g = (first + k) * 4 + 1;
      if (g < len)
        BRAID__PREFETCH(&heap[g]);
    }
    uint32_t best = 0;
    uint64_t bd = c[0].deadline;
    unsigned ties = 0;
    for (uint32_t k = 1; k < n; k++) {
      if (c[k].deadline < bd) {
        bd = c[k].deadline;
        best = k;
        ties = 0;
      } else if (c[k].deadline == bd)
        ties++;
    }
    uint32_t best_seq = 0;
    int have_seq = 0;
    if (ties > 0) {
      best_seq = c[best].timer->seq_;
      have_seq = 1;
      for (uint32_t k = best + 1; k < n; k++) {
        if (c[k].deadline != bd)
          continue;
        uint32_t q = c[k].timer->seq_;
        if (braid__seq_before(q, best_seq)) {
          best_seq = q;
          best = k;
        }
      }
    }
    if (bd > s.deadline)
      break;
    if (bd == s.deadline) {
      if (!have_seq)
        best_seq = c[best].timer->seq_;
      if (!have_s_seq) {
        s_seq = s.timer->seq_;
        have_s_seq = 1;
      }
      if (!braid__seq_before(best_seq, s_seq))
        break;
    }
    braid__heap_place(heap, i, c[best]);
    i = first + best;
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
    braid__heap_up(r->heap, i, 0);
  else
    braid__heap_down(r->heap, r->heap_len, i);
}

/* The heap array is placed so that heap + 1 starts a 64-byte line: the
 * children of slot i are slots 4i+1 .. 4i+4, so they then fill exactly
 * one line and a level of sifting touches one line, not two (malloc only
 * promises 16-byte alignment). The pointer the allocator returned is kept
 * in the 8 bytes before heap[0], inside the block. */
#define BRAID__HEAP_LINE 64u
#define BRAID__HEAP_SLACK (BRAID__HEAP_LINE + 16u)

static void *braid__heap_block(braid__heap_slot *heap) {
  void *block;
  memcpy(&block, (char *)heap - sizeof block, sizeof block);
  return block;
}

static braid__heap_slot *braid__heap_align(char *block) {
  uintptr_t a = (uintptr_t)block + sizeof(braid__heap_slot) + sizeof(void *);
  a = (a + BRAID__HEAP_LINE - 1) & ~(uintptr_t)(BRAID__HEAP_LINE - 1);
  return (braid__heap_slot *)(void *)(a - sizeof(braid__heap_slot));
}

static int braid__heap_grow(braid_reactor_t *r) {
  uint32_t cap = r->heap_cap ? r->heap_cap * 2 : 64;
  if (cap > BRAID__T_MAX_SLOTS || cap < r->heap_cap)
    return BRAID_ENOMEM;
  char *old = r->heap != NULL ? braid__heap_block(r->heap) : NULL;
  size_t old_off = old != NULL ? (size_t)((char *)r->heap - old) : 0;
  char *block = braid_realloc(old, (size_t)cap * sizeof *r->heap +
                                       BRAID__HEAP_SLACK);
  if (block == NULL)
    return BRAID_ENOMEM;
  braid__heap_slot *h = braid__heap_align(block);
  /* realloc keeps the bytes, not their alignment: slide them into place. */
  if (old != NULL && (size_t)((char *)h - block) != old_off)
    memmove(h, block + old_off, (size_t)r->heap_len * sizeof *h);
  memcpy((char *)h - sizeof block, &block, sizeof block);
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
  braid__heap_up(r->heap, i, 1);
  if (t->state_ == 1) /* now the earliest */
    braid__embed_note(r);
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
  braid__embed_clock(r);
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
    braid__heap_up(r->heap, i, 1);
  else
    braid__heap_down(r->heap, r->heap_len, i);
  /* Earlier and now first: the host may be waiting for the old deadline. */
  if (deadline < old && t->state_ == 1)
    braid__embed_note(r);
}

int braid_timer_reset(braid_timer_t *t, uint64_t delay) {
  int rc = braid__timer_check(t);
  if (rc < 0)
    return rc;
  braid__embed_clock(t->reactor_);
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
  if (r->heap != NULL)
    braid_free(braid__heap_block(r->heap));
  r->heap = NULL;
  r->heap_cap = 0;
}
