/* "upper": the skeleton of a braid protocol (see proto_skeleton.h and
 * docs/PROTOCOLS.md, which walks through this file).
 *
 * States, what each waits for, and its timeout (one braid_timeout_t per
 * connection, set by the one transition function conn_enter()):
 *
 *   state    waits for                           timeout (option)
 *   -------  ----------------------------------  -------------------------
 *   new      connection_made                     none (the transport calls
 *                                                it right after build)
 *   idle     the first byte of a line            idle_timeout. Then: quiet
 *                                                close (-> closing)
 *   line     the rest of the line                line_timeout from its
 *                                                first byte; more bytes do
 *                                                not push it back (a peer
 *                                                sending a byte a second).
 *                                                Then: "ERR timeout", close
 *   stalled  the peer to read our answers: the   write_timeout from entry.
 *            transport said pause_writing.       Then: abort
 *            Nothing is read or parsed.
 *   closing  the transport to flush and close    write_timeout. Then: abort
 *   aborted  connection_lost                     none: the transport calls
 *                                                it after an abort
 *   closed   nothing: freed as connection_lost returns
 *
 *        made            first byte              CRLF: answered
 *   new -----> idle ------------------> line ---------------------> idle
 *               |   <----------------------'     (line again if bytes wait)
 *               |   idle, line --pause_writing--> stalled
 *               |   stalled --resume_writing--> idle or line
 *               `-- QUIT, EOF, too long, a timeout, drain --> closing
 *   any --abort (stalled or closing timeout, destroy)--> aborted
 *   any --connection_lost--> closed
 *
 * idle, line and stalled are the live states; settle() picks one of them
 * from the facts (did the transport say stop? are bytes buffered?) after
 * every event, so no mix of facts is left without a state and a timer.
 *
 * Buffering is bounded: a line is at most max_line bytes (the parser says
 * so before its end arrives), and nothing is read while stalled, so the
 * buffer holds at most a partial line plus one read. */
#include <stdio.h>
#include <string.h>

#include "proto_skeleton.h"

typedef struct upper_conn upper_conn;

struct upper_server {
  braid_factory_t factory; /* first: the factory pointer is the server */
  braid_reactor_t *r;
  upper_options o;
  upper_stats stats;
  upper_conn *conns; /* open connections, to end them in destroy */
  int gone;          /* destroyed: free with the last connection */
};

struct upper_conn {
  braid_protocol_t proto; /* first: the protocol pointer is the connection */
  upper_server_t *srv;
  braid_transport_t *t;
  upper_conn *prev, *next;
  upper_state state;
  braid_timeout_t to; /* the state's timeout */
  braid_line_parser_t lp;
  char *buf; /* received, not yet parsed: at most a partial line + a read */
  size_t len, cap;
  int wpaused;  /* the transport said pause_writing */
  int draining; /* close after the current line */
  int depth;    /* inside process(): do not start it again */
};

static const char *const names[] = {"new",     "idle",    "line",  "stalled",
                                    "closing", "aborted", "closed"};

const char *upper_state_name(upper_state st) {
  return (unsigned)st < UPPER_NSTATES ? names[st] : "?";
}

static int live(const upper_conn *c) {
  return c->state == UPPER_IDLE || c->state == UPPER_LINE ||
         c->state == UPPER_STALLED;
}

/* ------------------------------------------------------------------------
 * The one transition function
 * ------------------------------------------------------------------------ */

/* Leave the current state for `st`: arm st's timeout (or none) and apply
 * st's reading. Entering the current state again changes nothing, so its
 * deadline stands. */
static void conn_enter(upper_conn *c, upper_state st) {
  if (c->state == st)
    return;
  upper_state from = c->state;
  c->state = st;
  const upper_options *o = &c->srv->o;
  if (o->on_state != NULL)
    o->on_state(o->arg, from, st);
  uint64_t period = 0;
  switch (st) {
  case UPPER_IDLE:
    period = o->idle_timeout;
    braid_transport_resume_reading(c->t);
    break;
  case UPPER_LINE:
    period = o->line_timeout;
    braid_transport_resume_reading(c->t);
    break;
  case UPPER_STALLED:
    /* The peer does not read: stop reading what it sends, so that TCP
     * pushes back on it and nothing piles up here. */
    period = o->write_timeout;
    braid_transport_pause_reading(c->t);
    break;
  case UPPER_CLOSING:
    period = o->write_timeout;
    break;
  case UPPER_NEW:
  case UPPER_ABORTED:
  case UPPER_CLOSED:
  case UPPER_NSTATES:
    break;
  }
  if (period == 0) {
    braid_timeout_cancel(&c->to);
  } else if (braid_timeout_set(&c->to, period) < 0) {
    /* A state without its timer would wait without a limit. */
    c->state = UPPER_ABORTED;
    braid_transport_abort(c->t);
  }
}

/* The live state the facts call for. */
static void settle(upper_conn *c) {
  if (!live(c))
    return;
  if (c->wpaused)
    conn_enter(c, UPPER_STALLED);
  else if (c->len > 0)
    conn_enter(c, UPPER_LINE);
  else
    conn_enter(c, UPPER_IDLE);
}

static void conn_abort(upper_conn *c) {
  conn_enter(c, UPPER_ABORTED);
  braid_transport_abort(c->t);
}

/* Say `last` (may be NULL) and close after it is written. */
static void conn_close(upper_conn *c, const char *last) {
  if (last != NULL)
    braid_transport_write(c->t, last, strlen(last));
  braid_transport_close(c->t);
  conn_enter(c, UPPER_CLOSING);
}

static void timeout_cb(braid_timeout_t *to, void *arg) {
  (void)to;
  upper_conn *c = arg;
  c->srv->stats.timeouts[c->state]++;
  switch (c->state) {
  case UPPER_IDLE:
    conn_close(c, NULL);
    break;
  case UPPER_LINE:
    conn_close(c, "ERR timeout\r\n");
    break;
  case UPPER_STALLED:
  case UPPER_CLOSING:
    /* A peer that does not read would keep a close waiting for good. */
    conn_abort(c);
    break;
  default:
    break;
  }
}

/* ------------------------------------------------------------------------
 * Parsing and answering
 * ------------------------------------------------------------------------ */

/* Answer one line (len bytes at `line`, ours to change). */
static void answer(upper_conn *c, char *line, size_t len) {
  c->srv->stats.lines++;
  if (len == 4 && strncmp(line, "QUIT", 4) == 0) {
    conn_close(c, "BYE\r\n");
    return;
  }
  for (size_t i = 0; i < len; i++)
    if (line[i] >= 'a' && line[i] <= 'z')
      line[i] = (char)(line[i] - 'a' + 'A');
  braid_iovec_t iov[2] = {{line, len}, {"\r\n", 2}};
  braid_transport_writev(c->t, iov, 2);
}

/* Parse and answer the lines in the buffer, one at a time, and never one
 * while the peer is not reading (wpaused): a client that pipelines lines
 * and reads nothing gets no more answers queued than the transport's high
 * mark. Writing may call pause_writing (or fail the connection) under us,
 * so the facts are checked again before each line. */
static void process(upper_conn *c) {
  if (c->depth > 0)
    return;
  c->depth++;
  size_t off = 0;
  const size_t max = c->srv->o.max_line;
  while (live(c) && !c->wpaused && !braid_transport_closing(c->t) &&
         off < c->len) {
    ptrdiff_t n =
        braid_line_parse(&c->lp, c->buf + off, c->len - off, "\r\n", 2, max);
    if (n == -2)
      break; /* need more: the parser remembers how far it looked */
    if (n < 0) {
      c->srv->stats.too_long++;
      conn_close(c, "ERR line too long\r\n");
      break;
    }
    memset(&c->lp, 0, sizeof c->lp); /* zero-filled: ready for a new line */
    char *line = c->buf + off;
    off += (size_t)n;
    answer(c, line, (size_t)n - 2);
    if (live(c) && c->draining) {
      conn_close(c, "BYE\r\n");
      break;
    }
    /* The line's timer ends with it; a next line's starts now. */
    if (live(c) && !c->wpaused)
      conn_enter(c, UPPER_IDLE);
  }
  /* Keep only what is not parsed (a partial line, or lines held back
   * while stalled). The parser's resume state counts from the line's
   * start, which moves to 0 with it. */
  if (off > 0) {
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
  }
  c->depth--;
  settle(c);
}

/* ------------------------------------------------------------------------
 * Transport callbacks
 * ------------------------------------------------------------------------ */

static upper_conn *conn_of(braid_protocol_t *p) {
  return BRAID_CONTAINER_OF(p, upper_conn, proto);
}

static void conn_made(braid_protocol_t *p, braid_transport_t *t) {
  upper_conn *c = conn_of(p);
  c->t = t;
  braid_timeout_init(&c->to, c->srv->r, timeout_cb, c);
  if (c->srv->gone) {
    /* The server was destroyed between build and now. */
    conn_abort(c);
    return;
  }
  conn_enter(c, UPPER_IDLE);
}

static void conn_data(braid_protocol_t *p, const void *data, size_t len) {
  upper_conn *c = conn_of(p);
  if (!live(c))
    return; /* closing: what comes now is dropped */
  if (c->len + len > c->cap) {
    size_t cap = c->cap ? c->cap : 256;
    while (cap < c->len + len)
      cap *= 2;
    char *b = braid_realloc(c->buf, cap);
    if (b == NULL) {
      conn_abort(c);
      return;
    }
    c->buf = b;
    c->cap = cap;
  }
  memcpy(c->buf + c->len, data, len);
  c->len += len;
  /* The first byte of a line starts its timer (idle -> line); the later
   * ones do not push it back: settle() re-enters line, which keeps it. */
  process(c);
}

static void conn_eof(braid_protocol_t *p) {
  upper_conn *c = conn_of(p);
  /* Every whole line has been answered (nothing is delivered while
   * stalled, so EOF comes after them); a partial one never will be. */
  if (live(c))
    conn_close(c, NULL);
}

static void conn_pause(braid_protocol_t *p) {
  upper_conn *c = conn_of(p);
  c->wpaused = 1;
  settle(c);
}

static void conn_resume(braid_protocol_t *p) {
  upper_conn *c = conn_of(p);
  c->wpaused = 0;
  /* Lines held back while stalled are answered now. */
  process(c);
}

static void conn_lost(braid_protocol_t *p, int reason) {
  (void)reason;
  upper_conn *c = conn_of(p);
  upper_server_t *s = c->srv;
  conn_enter(c, UPPER_CLOSED);
  braid_timeout_cancel(&c->to);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  s->stats.open--;
  braid_free(c->buf);
  braid_free(c);
  if (s->gone && s->stats.open == 0)
    braid_free(s);
}

static const braid_protocol_ops upper_ops = {
    .connection_made = conn_made,
    .data_received = conn_data,
    .eof_received = conn_eof,
    .connection_lost = conn_lost,
    .pause_writing = conn_pause,
    .resume_writing = conn_resume,
};

static braid_protocol_t *build(braid_factory_t *f, const braid_addr_t *peer) {
  (void)peer;
  upper_server_t *s = (upper_server_t *)(void *)f;
  if (s->gone)
    return NULL;
  upper_conn *c = braid_calloc(1, sizeof *c);
  if (c == NULL)
    return NULL; /* refused: the listener closes the connection */
  c->proto.ops = &upper_ops;
  c->srv = s;
  c->state = UPPER_NEW;
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  s->stats.open++;
  return &c->proto;
}

/* ------------------------------------------------------------------------
 * The server
 * ------------------------------------------------------------------------ */

int upper_server_create(braid_reactor_t *r, const upper_options *opts,
                        upper_server_t **out) {
  if (r == NULL || out == NULL)
    return BRAID_EINVAL;
  upper_server_t *s = braid_calloc(1, sizeof *s);
  if (s == NULL)
    return BRAID_ENOMEM;
  s->factory.build = build;
  s->r = r;
  if (opts != NULL)
    s->o = *opts;
  if (s->o.max_line == 0)
    s->o.max_line = 512;
  if (s->o.idle_timeout == 0)
    s->o.idle_timeout = BRAID_SEC(60);
  if (s->o.line_timeout == 0)
    s->o.line_timeout = BRAID_SEC(10);
  if (s->o.write_timeout == 0)
    s->o.write_timeout = BRAID_SEC(30);
  *out = s;
  return 0;
}

braid_factory_t *upper_server_factory(upper_server_t *s) {
  return &s->factory;
}

void upper_server_drain(braid_protocol_t *p, braid_transport_t *t, void *arg) {
  (void)t;
  (void)arg;
  upper_conn *c = conn_of(p);
  c->draining = 1;
  if (c->state == UPPER_IDLE)
    conn_close(c, "BYE\r\n");
}

void upper_server_stats(const upper_server_t *s, upper_stats *out) {
  *out = s->stats;
}

void upper_server_destroy(upper_server_t *s) {
  if (s == NULL)
    return;
  s->gone = 1;
  /* connection_lost never runs inside abort (the transport's promise), so
   * the list stays intact while we walk it. A connection not made yet is
   * aborted in conn_made. */
  for (upper_conn *c = s->conns; c != NULL; c = c->next)
    if (c->t != NULL && c->state != UPPER_ABORTED)
      conn_abort(c);
  if (s->stats.open == 0)
    braid_free(s);
}

/* ------------------------------------------------------------------------
 * The program: braid's examples/proto_skeleton [ENDPOINT]
 * ------------------------------------------------------------------------ */

#ifndef PROTO_SKELETON_NO_MAIN
#include <signal.h>

typedef struct program {
  braid_service_t *root;
  braid_signal_t sig_int, sig_term;
} program;

static void on_signal(braid_signal_t *sig, int signo, unsigned count,
                      void *arg) {
  (void)sig;
  (void)signo;
  (void)count;
  program *pg = arg;
  /* Graceful: stop accepting, let connections finish their line, cut the
   * rest after 5 s. With the watchers stopped too, nothing is left once
   * the last connection is gone and braid_reactor_run returns (a second
   * signal meets the default disposition and ends the process). */
  braid_service_stop(pg->root, BRAID_SEC(5), NULL);
  braid_signal_stop(&pg->sig_int);
  braid_signal_stop(&pg->sig_term);
}

int main(int argc, char **argv) {
  const char *ep = argc > 1 ? argv[1] : "tcp:port=7001:interface=127.0.0.1";
  braid_reactor_t *r;
  upper_server_t *s = NULL;
  braid_service_t *lis;
  program pg = {0};
  char err[256] = "";
  if (braid_reactor_create(&r, NULL) < 0)
    return 1;
  int rc = upper_server_create(r, NULL, &s);
  braid_service_listener_options lo = {0};
  lo.policy.max_connections = 1000; /* limits come from the policy */
  lo.policy.max_per_peer = 50;
  lo.drain = upper_server_drain;
  lo.drain_arg = s;
  if (rc == 0)
    rc = braid_service_group_create(r, "upper", &pg.root);
  if (rc == 0)
    rc = braid_service_listener_create(
        r, "listener", ep, upper_server_factory(s), &lo, &lis, err, sizeof err);
  if (rc == 0)
    rc = braid_service_add(pg.root, lis);
  if (rc == 0)
    rc = braid_service_start(pg.root, err, sizeof err);
  if (rc == 0) {
    braid_signal_start(r, &pg.sig_int, SIGINT, on_signal, &pg);
    braid_signal_start(r, &pg.sig_term, SIGTERM, on_signal, &pg);
    printf("upper: listening on %s\n", ep);
    fflush(stdout);
    braid_reactor_run(r);
  } else {
    fprintf(stderr, "upper: %s\n", err[0] ? err : braid_strerror(rc));
  }
  braid_service_destroy(pg.root);
  upper_server_destroy(s);
  braid_reactor_destroy(r);
  return rc == 0 ? 0 : 1;
}
#endif
