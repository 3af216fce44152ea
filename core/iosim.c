/* The I/O simulator (braid/iosim.h): pairs of memory transports with the
 * network between them modelled here, on the manual clock.
 *
 * Built on public API only: the memory transports are driven through
 * braid/testing.h exactly as a test would drive them by hand. Every side
 * is created with its consumer blocked, so whatever its protocol writes
 * stays in the transport's write queue (where it counts for flow control)
 * until the pump takes it over with braid_memory_transport_drain(); taken
 * bytes travel on a "wire" (one per direction) as segments with a due
 * time, and reach the other side through braid_memory_transport_feed().
 *
 * Each pump first takes over what every side wrote or closed ("collect"),
 * then performs exactly one event among those due, chosen by the seeded
 * generator: that single choice point is what interleaves connections,
 * and it never reorders one wire, whose segments are only ever taken from
 * the head. */
#include <string.h>

#include "braid/alloc.h"
#include "braid/error.h"
#include "braid/iosim.h"

enum { SEG_DATA, SEG_FIN, SEG_RST };

/* One batch on the wire: data taken from the sender at one moment, or the
 * end of input, or a reset. Data bytes follow the header. */
typedef struct braid__iseg {
  struct braid__iseg *next;
  uint64_t due;
  int kind;
  size_t off, len;
  char data[];
} braid__iseg;

typedef struct braid__iwire {
  braid__iseg *head, *tail;
  size_t bytes;      /* data bytes not yet delivered */
  uint64_t last_due; /* a later batch is never due before an earlier one */
} braid__iwire;

/* One end of a connection, and the wire carrying what it sends. */
typedef struct braid__iside {
  braid_memory_transport_t *mt; /* NULL: not up yet, or refused */
  braid_protocol_t *proto;
  braid__iwire out;
  uint8_t fin_sent; /* its end of input is on the wire */
  uint8_t rst_sent; /* it reset the connection or was reset: it is dead and
                       nothing it writes leaves any more */
  uint8_t refused;  /* a server side the factory refused: a closed socket */
} braid__iside;

enum { CONN_CONNECTING, CONN_UP, CONN_DONE };

struct braid_iosim_conn {
  braid_iosim_t *sim;
  braid_iosim_conn_t *next;
  unsigned id;
  int state;
  uint64_t due; /* CONNECTING: when it comes up */
  braid_protocol_t *server_given;
  braid_factory_t *factory;
  braid_addr_t client_addr;
  braid__iside side[2]; /* [0] the client, [1] the server; side[d] sends in
                           direction d */
};

/* A candidate event: connection `c` comes up (dir < 0) or the head of its
 * wire in direction `dir` is delivered. */
typedef struct braid__icand {
  braid_iosim_conn_t *c;
  int dir;
} braid__icand;

struct braid_iosim {
  braid_reactor_t *r;
  braid_iosim_options o;
  uint64_t rng;
  braid_iosim_conn_t *head, *tail;
  unsigned nconns;
  int busy; /* inside a pump, break or destroy: callbacks may not re-enter */
  braid__icand *cand;
  size_t cand_cap;
  char *scratch; /* a chunk that spans batches is gathered here */
  size_t scratch_cap;
  braid_iosim_stats st;
};

/* splitmix64 (Steele, Lea, Flood 2014): one 64-bit state, every seed
 * (0 included) gives a full-period sequence, and the state is the whole
 * story, so runs with the same seed repeat exactly. */
static uint64_t braid__iosim_rand(braid_iosim_t *sim) {
  uint64_t z = (sim->rng += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* Uniform in [lo, hi] (hi >= lo). The modulo bias is below 2^-40 for the
 * ranges a test uses, and the result only has to be reproducible. */
static uint64_t braid__iosim_range(braid_iosim_t *sim, uint64_t lo,
                                   uint64_t hi) {
  if (hi <= lo)
    return lo;
  uint64_t span = hi - lo;
  if (span == UINT64_MAX)
    return braid__iosim_rand(sim);
  return lo + braid__iosim_rand(sim) % (span + 1);
}

static void braid__iosim_trace(braid_iosim_conn_t *c, braid_iosim_event ev,
                               int dir, size_t len) {
  braid_iosim_t *sim = c->sim;
  if (sim->o.trace_cb != NULL)
    sim->o.trace_cb(c, ev, (braid_iosim_dir)(dir < 0 ? 0 : dir), len,
                    sim->o.trace_arg);
}

/* ------------------------------------------------------------------------
 * Wires
 * ------------------------------------------------------------------------ */

static int braid__wire_push(braid_iosim_t *sim, braid__iwire *w, int kind,
                            const void *data, size_t len) {
  braid__iseg *s = braid_malloc(sizeof *s + len);
  if (s == NULL)
    return BRAID_ENOMEM;
  uint64_t due = braid_reactor_now(sim->r) +
                 braid__iosim_range(sim, sim->o.delay_min, sim->o.delay_max);
  if (due < w->last_due)
    due = w->last_due; /* FIFO per stream: TCP never reorders one */
  w->last_due = due;
  s->next = NULL;
  s->due = due;
  s->kind = kind;
  s->off = 0;
  s->len = len;
  if (len > 0)
    memcpy(s->data, data, len);
  if (w->tail != NULL)
    w->tail->next = s;
  else
    w->head = s;
  w->tail = s;
  if (kind == SEG_DATA)
    w->bytes += len;
  return 0;
}

static void braid__wire_pop(braid__iwire *w) {
  braid__iseg *s = w->head;
  w->head = s->next;
  if (w->head == NULL)
    w->tail = NULL;
  braid_free(s);
}

/* Drop everything on the wire; returns the data bytes dropped. */
static size_t braid__wire_clear(braid__iwire *w) {
  size_t n = w->bytes;
  while (w->head != NULL)
    braid__wire_pop(w);
  w->bytes = 0;
  return n;
}

/* ------------------------------------------------------------------------
 * Sides
 * ------------------------------------------------------------------------ */

static braid_transport_t *braid__side_t(const braid__iside *s) {
  return braid_memory_transport_transport(s->mt);
}

/* The side no longer has a live transport: it closed, was reset, or the
 * factory refused it. */
static int braid__side_gone(const braid__iside *s) {
  return s->mt == NULL || braid_memory_transport_disconnected(s->mt, NULL);
}

/* Drop what is in flight on both wires of `c` (a reset). */
static void braid__conn_drop(braid_iosim_conn_t *c) {
  for (int d = 0; d < 2; d++) {
    size_t n = braid__wire_clear(&c->side[d].out);
    if (n > 0) {
      c->sim->st.bytes_dropped += n;
      braid__iosim_trace(c, BRAID_IOSIM_DROPPED, d, n);
    }
  }
}

/* Move the bytes in the side's value buffer onto its wire. */
static int braid__side_take(braid_iosim_t *sim, braid__iside *s) {
  size_t len;
  const void *v = braid_memory_transport_value(s->mt, &len);
  if (len == 0)
    return 0;
  int rc = braid__wire_push(sim, &s->out, SEG_DATA, v, len);
  if (rc < 0)
    return rc;
  braid_memory_transport_clear(s->mt);
  return 1;
}

/* Take over what side `d` of `c` wrote, closed or aborted since the last
 * look. Returns 1 if anything changed, 0 if not, or BRAID_ENOMEM. */
static int braid__collect(braid_iosim_conn_t *c, int d) {
  braid_iosim_t *sim = c->sim;
  braid__iside *s = &c->side[d];
  if (s->mt == NULL || s->rst_sent)
    return 0;
  /* What the protocol did from outside a callback (a close from a timer)
   * completes now, at the time it happened, not a turn later. */
  braid_memory_transport_run_pending(s->mt);
  int reason = 0;
  int lost = braid_memory_transport_disconnected(s->mt, &reason);
  if (braid_memory_transport_aborted(s->mt) || (lost && reason != 0)) {
    /* An abort sends a reset: what is in flight either way is dropped (the
     * peer's kernel discards its receive queue on a reset, and this side
     * reads nothing more), then the reset travels to the peer. */
    s->rst_sent = 1;
    braid__conn_drop(c);
    int rc = braid__wire_push(sim, &s->out, SEG_RST, NULL, 0);
    return rc < 0 ? rc : 1;
  }
  int progress = braid__side_take(sim, s);
  if (progress < 0)
    return progress;
  braid_transport_t *t = braid__side_t(s);
  size_t room = sim->o.window > s->out.bytes ? sim->o.window - s->out.bytes : 0;
  if (room > 0 && braid_transport_write_queued(t) > 0) {
    /* drain() may call back into the protocol (resume_writing, or
     * connection_lost when a close completes with this). */
    ptrdiff_t n = braid_memory_transport_drain(s->mt, room);
    if (n < 0)
      return (int)n;
    int rc = braid__side_take(sim, s);
    if (rc < 0)
      return rc;
    progress |= rc;
  }
  if (!s->fin_sent && braid_transport_write_queued(t) == 0 &&
      (braid_memory_transport_write_shut(s->mt) ||
       braid_memory_transport_closing(s->mt) ||
       braid_memory_transport_disconnected(s->mt, NULL))) {
    /* Everything before the shutdown or close is on the wire: the end of
     * input follows it (a close is a FIN too, not a reset). */
    int rc = braid__wire_push(sim, &s->out, SEG_FIN, NULL, 0);
    if (rc < 0)
      return rc;
    s->fin_sent = 1;
    progress = 1;
  }
  return progress;
}

/* ------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------ */

/* Whether the head of wire `d` could be delivered, time aside. */
static int braid__head_ready(const braid_iosim_conn_t *c, int d) {
  const braid__iseg *seg = c->side[d].out.head;
  if (seg == NULL)
    return 0;
  const braid__iside *rcv = &c->side[1 - d];
  if (seg->kind == SEG_RST || braid__side_gone(rcv))
    return 1;
  /* A paused reader takes nothing, not even the end of input: the bytes
   * wait on the wire, the window fills and the sender's queue grows. */
  return !braid_memory_transport_reading_paused(rcv->mt);
}

static void braid__conn_up(braid_iosim_conn_t *c) {
  braid_iosim_t *sim = c->sim;
  braid_protocol_t *client = c->side[0].proto;
  if (c->server_given == NULL && c->factory == NULL) {
    c->state = CONN_DONE;
    braid__iosim_trace(c, BRAID_IOSIM_REFUSED, 0, 0);
    client->transport = NULL;
    if (client->ops->connection_lost != NULL)
      client->ops->connection_lost(client, BRAID_ECONNREFUSED);
    return;
  }
  braid__iosim_trace(c, BRAID_IOSIM_CONNECTED, 0, 0);
  c->state = CONN_UP;
  braid_protocol_t *server =
      c->server_given != NULL ? c->server_given
                              : c->factory->build(c->factory, &c->client_addr);
  c->side[1].proto = server;
  braid_memory_transport_options so = {&sim->o.server_addr, &c->client_addr,
                                       true};
  braid_memory_transport_options co = {&c->client_addr, &sim->o.server_addr,
                                       true};
  if (server == NULL) {
    /* Refused by the factory: a listener closes such a connection at once,
     * so the client sees it come up and then the end of input. */
    c->side[1].refused = 1;
    c->side[1].fin_sent = 1;
    if (braid__wire_push(sim, &c->side[1].out, SEG_FIN, NULL, 0) < 0)
      c->side[1].rst_sent = 1; /* no memory: send a reset instead */
  } else {
    int rc =
        braid_memory_transport_create_ex(sim->r, server, &so, &c->side[1].mt);
    if (rc < 0) {
      if (server->ops->connection_lost != NULL)
        server->ops->connection_lost(server, rc);
      c->side[1].proto = NULL;
      c->side[1].refused = 1;
      c->side[1].rst_sent = 1;
    }
  }
  int rc =
      braid_memory_transport_create_ex(sim->r, client, &co, &c->side[0].mt);
  if (rc < 0) {
    if (client->ops->connection_lost != NULL)
      client->ops->connection_lost(client, rc);
    c->side[0].rst_sent = 1;
    braid__conn_drop(c);
    if (c->side[1].mt != NULL && !braid__side_gone(&c->side[1])) {
      c->side[1].rst_sent = 1;
      braid_memory_transport_lose(c->side[1].mt, BRAID_ECONNRESET);
    }
  }
}

/* How many bytes of data are due now at the head of `w`, contiguous. */
static size_t braid__due_bytes(const braid__iwire *w, uint64_t now) {
  size_t n = 0;
  for (const braid__iseg *s = w->head;
       s != NULL && s->kind == SEG_DATA && s->due <= now; s = s->next)
    n += s->len - s->off;
  return n;
}

static size_t braid__chunk(braid_iosim_conn_t *c, int d, size_t avail) {
  braid_iosim_t *sim = c->sim;
  size_t n;
  if (sim->o.chunk_cb != NULL) {
    n = sim->o.chunk_cb(c, (braid_iosim_dir)d, avail, sim->o.chunk_arg);
  } else if (sim->o.chunk_max == 0) {
    n = avail;
  } else {
    size_t lo = sim->o.chunk_min > 0 ? sim->o.chunk_min : 1;
    n = (size_t)braid__iosim_range(
        sim, lo, sim->o.chunk_max > lo ? sim->o.chunk_max : lo);
  }
  if (n < 1)
    n = 1;
  if (n > avail)
    n = avail;
  return n;
}

static int braid__deliver_data(braid_iosim_conn_t *c, int d) {
  braid_iosim_t *sim = c->sim;
  braid__iwire *w = &c->side[d].out;
  braid__iside *rcv = &c->side[1 - d];
  braid__iseg *seg = w->head;
  if (braid__side_gone(rcv)) {
    /* Nobody reads here any more. A closed socket answers with a reset
     * (once); one that was reset already stays silent. */
    size_t n = braid__wire_clear(w);
    sim->st.bytes_dropped += n;
    braid__iosim_trace(c, BRAID_IOSIM_DROPPED, d, n);
    if (!rcv->rst_sent) {
      rcv->rst_sent = 1;
      int rc = braid__wire_push(sim, &rcv->out, SEG_RST, NULL, 0);
      if (rc < 0)
        return rc;
    }
    return 0;
  }
  size_t avail = braid__due_bytes(w, braid_reactor_now(sim->r));
  size_t n = braid__chunk(c, d, avail);
  const char *p;
  if (n <= seg->len - seg->off) {
    p = seg->data + seg->off; /* zero-copy, as a real read buffer */
  } else {
    if (n > sim->scratch_cap) {
      char *b = braid_realloc(sim->scratch, n);
      if (b == NULL)
        return BRAID_ENOMEM;
      sim->scratch = b;
      sim->scratch_cap = n;
    }
    size_t got = 0;
    for (braid__iseg *s = seg; got < n; s = s->next) {
      size_t take = s->len - s->off;
      if (take > n - got)
        take = n - got;
      memcpy(sim->scratch + got, s->data + s->off, take);
      got += take;
    }
    p = sim->scratch;
  }
  int closing = braid_transport_closing(braid__side_t(rcv));
  braid__iosim_trace(c, closing ? BRAID_IOSIM_DROPPED : BRAID_IOSIM_DATA, d, n);
  if (closing) {
    /* The receiver closed and reads nothing more; a real transport stops
     * reading then too. */
    sim->st.bytes_dropped += n;
  } else {
    int rc = braid_memory_transport_feed(rcv->mt, p, n);
    if (rc < 0 && rc != BRAID_ECLOSED)
      return rc;
    if (rc == 0)
      sim->st.bytes_delivered += n;
    else
      sim->st.bytes_dropped += n;
  }
  /* The wire is untouched by callbacks (the pump is busy), so the bytes
   * can be consumed after delivery, which kept the pointer valid. */
  size_t left = n;
  while (left > 0) {
    braid__iseg *s = w->head;
    size_t take = s->len - s->off;
    if (take > left)
      take = left;
    s->off += take;
    left -= take;
    w->bytes -= take;
    if (s->off == s->len)
      braid__wire_pop(w);
  }
  return 0;
}

static int braid__deliver(braid_iosim_conn_t *c, int d) {
  braid_iosim_t *sim = c->sim;
  braid__iwire *w = &c->side[d].out;
  braid__iside *rcv = &c->side[1 - d];
  int kind = w->head->kind;
  if (kind == SEG_DATA)
    return braid__deliver_data(c, d);
  braid__wire_pop(w);
  if (kind == SEG_FIN) {
    braid__iosim_trace(c, BRAID_IOSIM_EOF, d, 0);
    if (!braid__side_gone(rcv))
      braid_memory_transport_feed_eof(rcv->mt);
    return 0;
  }
  /* A reset: the receiver's own bytes in flight are lost with it. */
  braid__iosim_trace(c, BRAID_IOSIM_RESET, d, 0);
  size_t n = braid__wire_clear(&rcv->out);
  if (n > 0) {
    sim->st.bytes_dropped += n;
    braid__iosim_trace(c, BRAID_IOSIM_DROPPED, 1 - d, n);
  }
  int live = !braid__side_gone(rcv);
  rcv->rst_sent = 1;
  if (live) {
    sim->st.resets++;
    braid_memory_transport_lose(rcv->mt, BRAID_ECONNRESET);
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * The API
 * ------------------------------------------------------------------------ */

int braid_iosim_create(braid_reactor_t *r, const braid_iosim_options *opts,
                       braid_iosim_t **out) {
  if (out != NULL)
    *out = NULL;
  if (r == NULL || out == NULL)
    return BRAID_EINVAL;
  braid_iosim_t *sim = braid_calloc(1, sizeof *sim);
  if (sim == NULL)
    return BRAID_ENOMEM;
  sim->r = r;
  if (opts != NULL)
    sim->o = *opts;
  if (sim->o.window == 0)
    sim->o.window = 65536;
  if (sim->o.delay_max < sim->o.delay_min)
    sim->o.delay_max = sim->o.delay_min;
  if (braid_addr_family(&sim->o.server_addr) == 0)
    braid_addr_ip(&sim->o.server_addr, "10.0.0.1", 8080);
  sim->rng = sim->o.seed;
  *out = sim;
  return 0;
}

int braid_iosim_destroy(braid_iosim_t *sim) {
  if (sim == NULL)
    return 0;
  if (sim->busy)
    return BRAID_EBUSY;
  sim->busy = 1;
  braid_iosim_conn_t *c = sim->head;
  while (c != NULL) {
    braid_iosim_conn_t *next = c->next;
    if (c->state == CONN_CONNECTING) {
      braid_protocol_t *p = c->side[0].proto;
      p->transport = NULL;
      if (p->ops->connection_lost != NULL)
        p->ops->connection_lost(p, BRAID_ECONNABORTED);
    }
    for (int d = 0; d < 2; d++) {
      braid_memory_transport_destroy(c->side[d].mt);
      braid__wire_clear(&c->side[d].out);
    }
    braid_free(c);
    c = next;
  }
  braid_free(sim->cand);
  braid_free(sim->scratch);
  braid_free(sim);
  return 0;
}

int braid_iosim_connect(braid_iosim_t *sim, braid_protocol_t *client,
                        braid_protocol_t *server, braid_factory_t *factory,
                        const braid_addr_t *client_addr,
                        braid_iosim_conn_t **out) {
  if (out != NULL)
    *out = NULL;
  if (sim == NULL || client == NULL || client->ops == NULL ||
      (server != NULL && (factory != NULL || server->ops == NULL)) ||
      (factory != NULL && factory->build == NULL) || client == server)
    return BRAID_EINVAL;
  if (sim->busy)
    return BRAID_EBUSY;
  if (sim->nconns + 1 > sim->cand_cap / 3) {
    /* Room for every candidate event of every connection, made here so
     * that choosing one never allocates. */
    size_t cap = sim->cand_cap ? sim->cand_cap * 2 : 48;
    braid__icand *n = braid_realloc(sim->cand, cap * sizeof *n);
    if (n == NULL)
      return BRAID_ENOMEM;
    sim->cand = n;
    sim->cand_cap = cap;
  }
  braid_iosim_conn_t *c = braid_calloc(1, sizeof *c);
  if (c == NULL)
    return BRAID_ENOMEM;
  c->sim = sim;
  c->id = sim->nconns++;
  c->state = CONN_CONNECTING;
  c->due = braid_reactor_now(sim->r) +
           braid__iosim_range(sim, sim->o.delay_min, sim->o.delay_max);
  c->server_given = server;
  c->factory = factory;
  c->side[0].proto = client;
  if (client_addr != NULL)
    c->client_addr = *client_addr;
  else
    braid_addr_ip(&c->client_addr, "10.0.0.2",
                  (uint16_t)(40000u + c->id % 25000u));
  if (sim->tail != NULL)
    sim->tail->next = c;
  else
    sim->head = c;
  sim->tail = c;
  if (out != NULL)
    *out = c;
  return 0;
}

/* Collect from every side, then perform one due event. */
static int braid__pump(braid_iosim_t *sim) {
  int progress = 0;
  for (braid_iosim_conn_t *c = sim->head; c != NULL; c = c->next) {
    if (c->state != CONN_UP)
      continue;
    for (int d = 0; d < 2; d++) {
      int rc = braid__collect(c, d);
      if (rc < 0)
        return rc;
      progress |= rc;
    }
  }
  uint64_t now = braid_reactor_now(sim->r);
  size_t k = 0;
  for (braid_iosim_conn_t *c = sim->head; c != NULL; c = c->next) {
    if (c->state == CONN_CONNECTING && c->due <= now) {
      sim->cand[k].c = c;
      sim->cand[k++].dir = -1;
    } else if (c->state == CONN_UP) {
      for (int d = 0; d < 2; d++)
        if (braid__head_ready(c, d) && c->side[d].out.head->due <= now) {
          sim->cand[k].c = c;
          sim->cand[k++].dir = d;
        }
    }
  }
  if (k == 0)
    return progress;
  /* The one seeded choice: which of the due events goes first. */
  size_t i = k > 1 ? (size_t)braid__iosim_range(sim, 0, k - 1) : 0;
  sim->st.events++;
  if (sim->cand[i].dir < 0) {
    braid__conn_up(sim->cand[i].c);
    return 1;
  }
  int rc = braid__deliver(sim->cand[i].c, sim->cand[i].dir);
  return rc < 0 ? rc : 1;
}

int braid_iosim_pump(braid_iosim_t *sim) {
  if (sim == NULL)
    return BRAID_EINVAL;
  if (sim->busy)
    return BRAID_EBUSY;
  sim->busy = 1;
  int rc = braid__pump(sim);
  sim->busy = 0;
  return rc;
}

/* The earliest due time of anything that could be delivered once its time
 * comes. Returns 0 when there is nothing. */
static int braid__next_due(const braid_iosim_t *sim, uint64_t *due) {
  int any = 0;
  for (const braid_iosim_conn_t *c = sim->head; c != NULL; c = c->next) {
    uint64_t t;
    if (c->state == CONN_CONNECTING)
      t = c->due;
    else if (c->state == CONN_UP) {
      int have = 0;
      t = UINT64_MAX;
      for (int d = 0; d < 2; d++)
        if (braid__head_ready(c, d) && c->side[d].out.head->due <= t) {
          t = c->side[d].out.head->due;
          have = 1;
        }
      if (!have)
        continue;
    } else {
      continue;
    }
    if (!any || t < *due)
      *due = t;
    any = 1;
  }
  return any;
}

/* Let the reactor run what is due now without waiting: memory transport
 * events caused outside a driving function (a protocol closing from a
 * timer) and call-soons. */
static int braid__settle(braid_iosim_t *sim) {
  int rc = braid_clock_advance(sim->r, 0);
  if (rc == BRAID_EINVAL) {
    rc = braid_reactor_run_once(sim->r, false);
    return rc < 0 ? rc : 0;
  }
  return rc;
}

ptrdiff_t braid_iosim_flush(braid_iosim_t *sim, size_t max_steps) {
  if (sim == NULL)
    return BRAID_EINVAL;
  if (sim->busy)
    return BRAID_EBUSY;
  if (max_steps == 0)
    max_steps = BRAID_IOSIM_DEFAULT_STEPS;
  size_t steps = 0;
  for (;;) {
    if (steps >= max_steps)
      return BRAID_ELIMIT;
    int rc = braid_iosim_pump(sim);
    if (rc < 0)
      return rc;
    if (rc > 0) {
      steps++;
      continue;
    }
    rc = braid__settle(sim);
    if (rc < 0)
      return rc;
    rc = braid_iosim_pump(sim);
    if (rc < 0)
      return rc;
    if (rc > 0) {
      steps++;
      continue;
    }
    uint64_t due = 0;
    if (!braid__next_due(sim, &due))
      return (ptrdiff_t)steps;
    uint64_t now = braid_reactor_now(sim->r);
    if (due <= now) {
      /* Cannot happen (a due event would have been pumped); counted so
       * that a mistake here cannot spin forever. */
      steps++;
      continue;
    }
    rc = braid_clock_advance(sim->r, due - now);
    if (rc < 0)
      return rc;
    sim->st.clock_advances++;
    steps++;
  }
}

int braid_iosim_break(braid_iosim_conn_t *c, int reason) {
  if (c == NULL || reason >= 0)
    return BRAID_EINVAL;
  braid_iosim_t *sim = c->sim;
  if (sim->busy)
    return BRAID_EBUSY;
  if (c->state == CONN_DONE)
    return BRAID_ECLOSED;
  sim->busy = 1;
  if (c->state == CONN_CONNECTING) {
    c->state = CONN_DONE;
    braid_protocol_t *p = c->side[0].proto;
    p->transport = NULL;
    if (p->ops->connection_lost != NULL)
      p->ops->connection_lost(p, reason);
    sim->busy = 0;
    return 0;
  }
  int any = 0;
  braid__conn_drop(c);
  for (int d = 0; d < 2; d++) {
    braid__iside *s = &c->side[d];
    s->rst_sent = 1;
    if (!braid__side_gone(s)) {
      any = 1;
      if (reason == BRAID_ECONNRESET)
        sim->st.resets++;
      braid_memory_transport_lose(s->mt, reason);
    }
  }
  sim->busy = 0;
  return any ? 0 : BRAID_ECLOSED;
}

braid_memory_transport_t *braid_iosim_client(braid_iosim_conn_t *c) {
  return c != NULL ? c->side[0].mt : NULL;
}

braid_memory_transport_t *braid_iosim_server(braid_iosim_conn_t *c) {
  return c != NULL ? c->side[1].mt : NULL;
}

braid_protocol_t *braid_iosim_server_protocol(braid_iosim_conn_t *c) {
  return c != NULL ? c->side[1].proto : NULL;
}

bool braid_iosim_established(const braid_iosim_conn_t *c) {
  return c != NULL && c->state == CONN_UP && c->side[0].mt != NULL &&
         c->side[1].mt != NULL;
}

unsigned braid_iosim_conn_id(const braid_iosim_conn_t *c) {
  return c != NULL ? c->id : 0;
}

size_t braid_iosim_in_flight(const braid_iosim_conn_t *c, braid_iosim_dir dir) {
  if (c == NULL ||
      (dir != BRAID_IOSIM_TO_SERVER && dir != BRAID_IOSIM_TO_CLIENT))
    return 0;
  return c->side[dir].out.bytes;
}

int braid_iosim_stats_get(const braid_iosim_t *sim, braid_iosim_stats *out) {
  if (sim == NULL || out == NULL)
    return BRAID_EINVAL;
  *out = sim->st;
  return 0;
}
