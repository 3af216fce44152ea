/* libFuzzer target: a chat-like line protocol (every line a client sends
 * goes to every other client, as examples/chat.c) over memory transports,
 * checked against a model.
 *
 * The input is a script for up to four clients: connect, send bytes, shut
 * down writing, drop the connection, block / unblock / drain the client's
 * reader. The model splits each client's bytes into lines itself (by the
 * documented contract of braid_line_parse: "\r\n", lines up to MAXLINE
 * bytes, too long once MAXLINE + 2 bytes hold no delimiter, which closes
 * the sender) and predicts what every client must receive. A client whose
 * reader is blocked and falls more than HIGH bytes behind is dropped by
 * the protocol (pause_writing); that is the only way a client may vanish
 * without the model saying so, and such a client must have received a
 * prefix of its prediction. Every other client receives exactly its
 * prediction. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "braid/basic.h"
#include "braid/testing.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
              #cond);                                                          \
      abort();                                                                 \
    }                                                                          \
  } while (0)

#define NCLIENTS 4
#define MAXLINE 40
#define HIGH 256
#define LOW 64

typedef struct buf {
  char *p;
  size_t len, cap;
} buf;

static void buf_add(buf *b, const void *d, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    b->p = realloc(b->p, cap);
    CHECK(b->p != NULL);
    b->cap = cap;
  }
  if (n)
    memcpy(b->p + b->len, d, n);
  b->len += n;
}

/* ---- the protocol under test: examples/chat.c with small limits ---- */

typedef struct chat_client chat_client;
struct chat_client {
  braid_line_receiver_t lr;
  chat_client **head;
  chat_client *next, **prevp;
  int *lost; /* the harness's flag */
};

static void chat_made(braid_line_receiver_t *lr) {
  chat_client *c = (chat_client *)lr, **head = c->head;
  braid_transport_set_write_limits(braid_line_receiver_transport(lr), HIGH,
                                   LOW);
  c->next = *head;
  c->prevp = head;
  if (*head != NULL)
    (*head)->prevp = &c->next;
  *head = c;
}

static void chat_line(braid_line_receiver_t *lr, const char *line, size_t len) {
  chat_client *from = (chat_client *)lr;
  for (chat_client *c = *from->head; c != NULL; c = c->next)
    if (c != from)
      braid_line_receiver_send_line(&c->lr, line, len);
}

static void chat_slow(braid_line_receiver_t *lr) {
  if (getenv("FUZZ_DEBUG") != NULL)
    fprintf(stderr, "slow: queued %zu\n",
            braid_transport_write_queued(braid_line_receiver_transport(lr)));
  braid_transport_abort(braid_line_receiver_transport(lr));
}

static void chat_lost(braid_line_receiver_t *lr, int reason) {
  chat_client *c = (chat_client *)lr;
  (void)reason;
  *c->prevp = c->next;
  if (c->next != NULL)
    c->next->prevp = c->prevp;
  *c->lost = 1;
  free(c);
}

static const braid_line_receiver_ops chat_ops = {
    .connection_made = chat_made,
    .line_received = chat_line,
    .connection_lost = chat_lost,
    .pause_writing = chat_slow,
};

/* ---- the harness and the model ---- */

typedef struct slot {
  braid_memory_transport_t *mt;
  int up;      /* the model thinks it is connected */
  int lost;    /* connection_lost ran */
  int blocked; /* its reader is blocked */
  int dropped; /* dropped by the protocol as a slow reader */
  int eof;     /* its writing side was shut down */
  buf partial; /* the model's partial line from this client */
  buf expect;  /* what it should receive */
  buf got;     /* what it received */
} slot;

static braid_reactor_t *reactor(void) {
  static braid_reactor_t *r;
  if (r == NULL)
    CHECK(braid_testing_reactor_create(&r) == 0);
  return r;
}

static void collect(slot *s) {
  size_t n;
  const void *v = braid_memory_transport_value(s->mt, &n);
  buf_add(&s->got, v, n);
  braid_memory_transport_clear(s->mt);
  CHECK(s->got.len <= s->expect.len);
  CHECK(s->got.len == 0 || memcmp(s->got.p, s->expect.p, s->got.len) == 0);
}

/* The model's side of client i sending bytes: returns 1 if the line
 * receiver must close it (a line too long). */
static int model_send(slot *slots, int i, const uint8_t *d, size_t n) {
  slot *s = &slots[i];
  buf_add(&s->partial, d, n);
  size_t off = 0;
  int too_long = 0;
  for (;;) {
    const char *b = s->partial.p + off;
    size_t len = s->partial.len - off, at = SIZE_MAX;
    for (size_t k = 0; k + 2 <= len && k <= MAXLINE; k++)
      if (b[k] == '\r' && b[k + 1] == '\n') {
        at = k;
        break;
      }
    if (at == SIZE_MAX) {
      too_long = len >= MAXLINE + 2;
      break;
    }
    for (int j = 0; j < NCLIENTS; j++)
      if (j != i && slots[j].up) {
        buf_add(&slots[j].expect, b, at);
        buf_add(&slots[j].expect, "\r\n", 2);
      }
    off += at + 2;
  }
  memmove(s->partial.p, s->partial.p + off, s->partial.len - off);
  s->partial.len -= off;
  return too_long;
}

static void model_down(slot *s) {
  s->up = 0;
  s->partial.len = 0;
}

static void slot_free(slot *s) {
  if (s->mt != NULL)
    braid_memory_transport_destroy(s->mt);
  free(s->partial.p);
  free(s->expect.p);
  free(s->got.p);
  memset(s, 0, sizeof *s);
}

/* After each step: connections that ended must be the ones the model
 * ended, or slow readers. */
static void sync(slot *slots) {
  for (int j = 0; j < NCLIENTS; j++) {
    slot *s = &slots[j];
    if (s->mt == NULL)
      continue;
    collect(s);
    /* The abort is seen at once; connection_lost may come later (from a
     * zero-delay timer when another client's bytes caused it). */
    if (!s->dropped && braid_memory_transport_aborted(s->mt)) {
      CHECK(s->blocked); /* only a blocked reader is dropped */
      s->dropped = 1;
      model_down(s);
    }
    CHECK(!s->up || !s->lost); /* nobody vanishes unannounced */
    if (!s->up && !s->dropped && s->lost)
      CHECK(s->got.len == s->expect.len); /* nothing in flight was lost */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096)
    return 0;
  static slot slots[NCLIENTS];
  static int debug = -1;
  if (debug < 0)
    debug = getenv("FUZZ_DEBUG") != NULL;
  chat_client *head = NULL;
  size_t i = 0;
  while (i + 2 <= size) {
    uint8_t op = data[i] % 7, k = data[i + 1] % NCLIENTS;
    i += 2;
    slot *s = &slots[k];
    if (debug)
      fprintf(stderr,
              "op %d client %d: up %d lost %d eof %d blocked %d got %zu "
              "expect %zu\n",
              op, k, s->up, s->lost, s->eof, s->blocked, s->got.len,
              s->expect.len);
    switch (op) {
    case 0: /* connect (replacing a finished client) */
      if (s->mt != NULL && !s->lost)
        break;
      slot_free(s);
      chat_client *c = calloc(1, sizeof *c);
      CHECK(c != NULL);
      braid_line_receiver_init(&c->lr, &chat_ops, c);
      CHECK(braid_line_receiver_set_max_length(&c->lr, MAXLINE) == 0);
      c->head = &head;
      c->lost = &s->lost;
      CHECK(braid_memory_transport_create(reactor(), &c->lr.proto, &s->mt) ==
            0);
      s->up = 1;
      break;
    case 1: { /* send bytes */
      size_t n = i < size ? data[i++] % 64 : 0;
      if (n > size - i)
        n = size - i;
      if (s->mt == NULL || n == 0) {
        i += n;
        break;
      }
      int rc = braid_memory_transport_feed(s->mt, data + i, n);
      if (!s->up) {
        CHECK(rc == BRAID_ECLOSED);
      } else {
        CHECK(rc == 0);
        if (model_send(slots, k, data + i, n)) {
          /* Closed: at once, or once a blocked reader took its queue. */
          CHECK(s->lost ||
                (s->blocked && braid_memory_transport_closing(s->mt)));
          model_down(s);
        } else {
          CHECK(!braid_memory_transport_closing(s->mt) || s->lost);
        }
      }
      i += n;
      break;
    }
    case 2: /* the client shuts down writing: the server closes */
      if (s->mt == NULL)
        break;
      {
        int want = s->eof || s->lost ? BRAID_ECLOSED : 0;
        CHECK(braid_memory_transport_feed_eof(s->mt) == want);
      }
      if (s->up) {
        /* No eof_received: the server closes after flushing. */
        CHECK(s->lost || s->blocked);
        model_down(s);
      }
      s->eof = 1;
      break;
    case 3: /* the connection drops */
      if (s->mt == NULL)
        break;
      {
        int want = s->lost ? BRAID_ECLOSED : 0;
        CHECK(braid_memory_transport_lose(s->mt, BRAID_ECONNRESET) == want);
      }
      CHECK(s->lost);
      if (s->up && !s->blocked) {
        collect(s);
        CHECK(s->got.len == s->expect.len);
      }
      s->dropped |= s->blocked; /* queued bytes are gone */
      model_down(s);
      break;
    case 4: /* block or unblock the reader */
      if (s->mt == NULL || s->lost)
        break;
      s->blocked = !s->blocked;
      CHECK(braid_memory_transport_set_consumer_blocked(s->mt, s->blocked) ==
            0);
      break;
    case 5: /* the blocked reader drains a little */
      if (s->mt == NULL || s->lost || !s->blocked)
        break;
      CHECK(braid_memory_transport_drain(s->mt, 1 + k * 37) >= 0);
      break;
    case 6: /* time passes: deferred events run */
      CHECK(braid_clock_advance(reactor(), 0) == 0);
      break;
    }
    sync(slots);
  }
  /* Unblock everyone: each live client then has exactly its prediction. */
  for (int j = 0; j < NCLIENTS; j++) {
    slot *s = &slots[j];
    if (s->mt != NULL && !s->lost && s->blocked) {
      s->blocked = 0;
      CHECK(braid_memory_transport_set_consumer_blocked(s->mt, 0) == 0);
    }
  }
  sync(slots);
  for (int j = 0; j < NCLIENTS; j++) {
    slot *s = &slots[j];
    if (s->mt != NULL && !s->dropped && s->up)
      CHECK(s->got.len == s->expect.len);
  }
  for (int j = 0; j < NCLIENTS; j++)
    slot_free(&slots[j]);
  CHECK(head == NULL);
  braid_clock_advance(reactor(), 0);
  return 0;
}
