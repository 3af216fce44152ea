/* The HTTP server's connection: an explicit state machine.
 *
 * A connection is in exactly one state, c->state. The state says what the
 * server is waiting for, and each state has one timeout, armed by the one
 * transition function, conn_enter(), on entry. The other fields of
 * struct hs_conn are facts the state is decided from (what the transport
 * said, what is buffered, the request and its body) or the data of the
 * state's timer; none of them is a second answer to "what is this
 * connection doing".
 *
 *   state    waits for                          timeout (option, default)
 *   -------  ---------------------------------  ---------------------------
 *   head     a request head: the first one      header_timeout (10 s) from
 *            from connection_made, a later one  entry; bytes do not restart
 *            from its first byte                it. Then: 408 and close, or
 *                                               a quiet close if no byte
 *                                               came.
 *   idle     the first byte of the next         idle_timeout (60 s). Then:
 *            request (keep-alive)               a quiet close.
 *   handler  the handler: to answer, write,     handler_timeout (60 s) from
 *            ask for the body, finish           its last call into us. Then:
 *                                               503 and close if no head
 *                                               went out, else abort; the
 *                                               handler hears `closed`
 *                                               (BRAID_ETIMEDOUT).
 *   body     body bytes the handler asked for   body_timeout (idle_timeout)
 *                                               from the last byte. Then:
 *                                               the handler's `end` gets
 *                                               BRAID_ETIMEDOUT; it answers
 *                                               (handler state) and the
 *                                               connection closes after.
 *   discard  the rest of a body nobody read,    body_timeout from the last
 *            to reach the next request          byte. Then: abort.
 *   writing  the peer to take a file piece we   write_timeout (60 s)
 *            queued with sendfile               without progress. Then:
 *                                               abort.
 *   stalled  the peer to read: the transport    write_timeout without
 *            asked us to stop producing.        progress. Then: abort.
 *            Nothing is read, parsed, or
 *            delivered to a handler.
 *   closing  the transport to flush and close   write_timeout without
 *                                               progress. Then: abort.
 *   linger   the peer's EOF after our FIN;      linger_timeout (2 s) after
 *            input is read and dropped          the peer last took output,
 *            (nginx's lingering close: request  checked every
 *            bytes may still be on their way,   linger_timeout; while our
 *            and closing at once would make     output is queued and not
 *            the kernel answer them with a      taken, write_timeout. Then:
 *            reset that can destroy the         abort.
 *            response before it is read)
 *   aborted  connection_lost                    none: the transport calls
 *                                               it after an abort
 *   closed   nothing: freed as connection_lost returns
 *   (new     connection_made, which the transport calls right after
 *            building the protocol)
 *
 * "Without progress": the peer takes no byte of our output. It is looked
 * for every quarter of the timeout, so the drop comes between 1 and 1.25
 * timeouts after the last byte taken. Bytes the peer sends never count: a
 * client that pipelines without reading is a stalled one.
 *
 * Transitions, by event:
 *
 *          connection_made          first bytes, not a whole head
 *     new ----------------> head <---------------------- idle
 *                            |  \ bad head, 408, 413      ^  \ timeout, EOF
 *                head parsed |   `-----> linger/closing   |   `--> closing
 *          (from idle too if |                            |
 *           it came whole)   v                            | response done,
 *     body <-- read_body -- handler -- finish ------------+ keep-alive (head
 *       |  --------------->  ^  |                         | if bytes wait,
 *       |  complete, paused, |  | sendfile piece          | discard if a
 *       |  end(error)        |  v                         | body is left)
 *       |              writing (piece written: back)      |
 *       `-- handler finished early --> discard -- skipped-'
 *
 *   head, idle, handler, body, discard, writing --pause_writing--> stalled
 *   stalled --resume_writing--> the live state the facts call for
 *   handler --finish, not keep-alive--> closing, or linger when request
 *     bytes may still arrive (unread body, pipelined bytes)
 *   linger --EOF--> closing
 *   any --abort (a timeout, the server destroyed, no memory)--> aborted
 *   any --connection_lost--> closed
 *
 * head..stalled are the live states: they read, write and move between
 * each other. braid__hs_settle() picks the live state from the facts after
 * every event (stalled if the transport said stop; with a request:
 * writing, body or handler; without one: discard, head or idle), so no mix
 * of facts is left without a state and its timer. closing, linger,
 * aborted and closed are entered only by the events that cause them, and
 * never left except forward.
 *
 * Re-entrancy: handlers call back into the server (finish from inside a
 * body callback, a write that fails and loses the connection...). Every
 * entry from the outside world (transport callbacks, timers) raises
 * c->depth; work that must not nest, such as starting the next pipelined
 * request, is left to the loop in braid__hs_process() at depth 0. So a
 * client pipelining a thousand requests costs a loop, not a thousand
 * frames. connection_lost is never called from inside a call we make (the
 * transport's promise), so a connection is freed only from there. */
#include <stdio.h>
#include <string.h>

#include "protocols/http/server_internal.h"

#define CS_NEW BRAID__HTTP_CS_NEW
#define CS_HEAD BRAID__HTTP_CS_HEAD
#define CS_IDLE BRAID__HTTP_CS_IDLE
#define CS_HANDLER BRAID__HTTP_CS_HANDLER
#define CS_BODY BRAID__HTTP_CS_BODY
#define CS_DISCARD BRAID__HTTP_CS_DISCARD
#define CS_WRITING BRAID__HTTP_CS_WRITING
#define CS_STALLED BRAID__HTTP_CS_STALLED
#define CS_CLOSING BRAID__HTTP_CS_CLOSING
#define CS_LINGER BRAID__HTTP_CS_LINGER
#define CS_ABORTED BRAID__HTTP_CS_ABORTED
#define CS_CLOSED BRAID__HTTP_CS_CLOSED

static const char *const state_names[] = {
    "new",     "head",    "idle",    "handler", "body",    "discard",
    "writing", "stalled", "closing", "linger",  "aborted", "closed",
};

const char *braid__http_conn_state_name(braid__http_conn_state st) {
  if ((unsigned)st >= sizeof state_names / sizeof state_names[0])
    return "?";
  return state_names[st];
}

bool braid__hs_live(const hs_conn *c) {
  return c->state >= CS_HEAD && c->state <= CS_STALLED;
}

/* ------------------------------------------------------------------------
 * States and their timers
 * ------------------------------------------------------------------------ */

static void timer_cb(braid_timer_t *t, void *arg);

/* Inside an I/O callback the reactor's cached clock is the one from
 * before the poller's wait, which may have blocked for a long time: a
 * deadline from it would be early (a timer firing at once after an idle
 * second). Refresh it (a vDSO call). */
static uint64_t now_fresh(hs_conn *c) {
  braid_reactor_update_time(c->srv->r);
  return braid_reactor_now(c->srv->r);
}

/* The state's deadline is `d` ns from `now`. The one timer fires at or
 * before it: firing early costs a look (timer_cb arms it again for the
 * rest), so moving to a later deadline needs no timer operation, only an
 * earlier one does. A kept-alive connection then costs no timer heap work
 * per request (idle, handler and idle again each push the deadline on),
 * and a sign of life (a body byte, a handler call) is one store. A state
 * whose timer cannot be armed (no memory for the timer heap) would wait
 * without a limit: the connection is aborted instead. */
static void deadline_set(hs_conn *c, uint64_t now, uint64_t d) {
  if (d == 0)
    d = 1;
  c->deadline = now + d < now ? UINT64_MAX : now + d;
  if (braid_timer_active(&c->timer)) {
    if (c->armed <= c->deadline)
      return;
    braid_timer_cancel(&c->timer);
  }
  c->armed = c->deadline;
  if (braid_timer_start(c->srv->r, &c->timer, c->deadline - now, timer_cb, c) <
      0)
    braid__hs_abort(c, BRAID_ENOMEM);
}

/* Read when somebody wants the bytes: a head, a body being delivered or
 * skipped, input to drop while lingering, or (bounded) what follows a
 * request in progress, so that a reset from a client that gave up is
 * noticed and the handler told through `closed`, instead of when its
 * answer is written. Never while stalled: what the client sends then
 * waits in the kernel's buffers, and TCP stops it. */
static void conn_reading(hs_conn *c) {
  bool want;
  switch (c->state) {
  case CS_HEAD:
  case CS_IDLE:
  case CS_BODY:
  case CS_DISCARD:
  case CS_LINGER:
    want = true;
    break;
  case CS_HANDLER:
  case CS_WRITING:
    /* Body bytes wait until the handler asks for them; pipelined requests
     * are buffered up to one read past HS_READ_MAX. */
    want = !c->body_pending && c->len < HS_READ_MAX;
    break;
  case CS_STALLED:
    want = false;
    break;
  default:
    return; /* no transport yet, or it stops reading by itself */
  }
  if (want)
    braid_transport_resume_reading(c->t);
  else
    braid_transport_pause_reading(c->t);
}

static bool progress_state(hs_state st) {
  return st == CS_WRITING || st == CS_STALLED || st == CS_CLOSING ||
         st == CS_LINGER;
}

/* Progress timers look every `period` (timer_cb) whether the peer took a
 * byte of our output. The clock runs on from one such state to the next
 * (a stalled response that finishes and closes is still waiting for the
 * same peer to read): it starts only when entering them from another. */
static void progress_start(hs_conn *c, hs_state from, uint64_t now,
                           uint64_t period) {
  if (!progress_state(from)) {
    braid__hs_out_sample(c, 0);
    c->wmark = c->acked;
    c->wlast = now;
  }
  deadline_set(c, now, period);
}

/* The one transition function: leave the current state, enter `st`, set
 * st's deadline on the connection's one timer and apply st's reading.
 * Entering the current state again changes nothing (its deadline
 * stands). */
static void conn_enter(hs_conn *c, hs_state st) {
  if (c->state == st)
    return;
  hs_state from = c->state;
  c->state = st;
  braid_http_server_t *s = c->srv;
  if (s->state_probe != NULL)
    s->state_probe(c, from, st, s->state_probe_arg);
  conn_reading(c);
  /* A callback above (the probe, a transport) may have moved us on: then
   * that state's deadline is the one to keep. */
  if (c->state != st)
    return;
  const braid_http_server_options *o = &s->opts;
  switch (st) {
  case CS_HEAD:
    deadline_set(c, now_fresh(c), o->header_timeout);
    break;
  case CS_IDLE:
    deadline_set(c, now_fresh(c), o->idle_timeout);
    break;
  case CS_HANDLER:
    deadline_set(c, now_fresh(c), o->handler_timeout);
    break;
  case CS_BODY:
  case CS_DISCARD:
    deadline_set(c, now_fresh(c), o->body_timeout);
    break;
  case CS_WRITING:
  case CS_STALLED:
  case CS_CLOSING:
    progress_start(c, from, now_fresh(c), o->write_timeout / 4);
    break;
  case CS_LINGER:
    progress_start(c, from, now_fresh(c), o->linger_timeout);
    break;
  case CS_NEW:
  case CS_ABORTED:
  case CS_CLOSED:
    /* No timer: see the table at the top. */
    if (braid_timer_active(&c->timer))
      braid_timer_cancel(&c->timer);
    break;
  }
}

void braid__hs_settle(hs_conn *c) {
  if (!braid__hs_live(c))
    return;
  braid_http_req_t *q = c->req;
  hs_state st;
  if (c->wpaused)
    st = CS_STALLED;
  else if (q != NULL && q->fstate == HS_FILE_SENDING)
    st = CS_WRITING;
  else if (q != NULL && c->body_pending && q->bstate == HS_BODY_READING &&
           !q->bpaused)
    st = CS_BODY;
  else if (q != NULL)
    st = CS_HANDLER;
  else if (c->body_pending)
    st = CS_DISCARD;
  else if (c->len > 0 || c->state == CS_HEAD)
    st = CS_HEAD; /* a head in the buffer, or the first one to come */
  else if (c->srv->draining) {
    braid__hs_close(c); /* no keep-alive while draining */
    return;
  } else
    st = CS_IDLE;
  conn_enter(c, st);
  /* The same state may want different reading now (the buffer filled). */
  conn_reading(c);
}

/* A sign of life in a state timed from the last one: the handler called
 * us (handler), a body byte arrived (body, discard). */
static void alive(hs_conn *c, uint64_t timeout) {
  deadline_set(c, now_fresh(c), timeout);
}

void braid__hs_handler_alive(hs_conn *c) {
  if (c->state == CS_HANDLER)
    alive(c, c->srv->opts.handler_timeout);
}

/* Progress timers: has the peer taken a byte of our output since the
 * last look? */
static bool progress_seen(hs_conn *c, uint64_t now) {
  braid__hs_out_sample(c, 0);
  if (c->acked <= c->wmark)
    return false;
  c->wmark = c->acked;
  c->wlast = now;
  return true;
}

static void handler_expired(hs_conn *c) {
  braid_http_req_t *q = c->req;
  if (q->head_sent) {
    /* The response cannot be completed: the client can only tell it was
     * cut short by the connection's end. */
    braid__hs_abort(c, BRAID_ETIMEDOUT);
    return;
  }
  /* Answer for the handler and close: 503, as Go's http.TimeoutHandler
   * does (the server cannot serve it now; a 504 would name a gateway that
   * is not there). The handler hears `closed` and its request becomes a
   * zombie: every call on it returns BRAID_ECLOSED. */
  braid__hs_fail(c, 503, q);
  braid__hs_req_detach(c, q, BRAID_ETIMEDOUT);
}

/* The state's deadline has come: act on it (see the table at the top). */
static void expired(hs_conn *c, uint64_t now) {
  const braid_http_server_options *o = &c->srv->opts;
  switch (c->state) {
  case CS_HEAD:
    /* Slowloris: the head did not arrive in time. */
    if (c->len > 0)
      braid__hs_fail(c, 408, NULL);
    else
      braid__hs_close(c);
    break;
  case CS_IDLE:
    braid__hs_close(c);
    break;
  case CS_HANDLER:
    handler_expired(c);
    break;
  case CS_BODY:
    /* The body will not complete: tell its reader, which answers; the
     * connection cannot be reused. */
    c->req->close_after = true;
    braid__hs_body_end(c->req, BRAID_ETIMEDOUT);
    break;
  case CS_DISCARD:
    braid__hs_abort(c, BRAID_ETIMEDOUT);
    break;
  case CS_WRITING:
  case CS_STALLED:
  case CS_CLOSING: {
    progress_seen(c, now);
    uint64_t limit = o->write_timeout, quiet = now - c->wlast;
    if (quiet >= limit)
      braid__hs_abort(c, BRAID_ETIMEDOUT);
    else
      deadline_set(c, now,
                   limit - quiet < limit / 4 ? limit - quiet : limit / 4);
    break;
  }
  case CS_LINGER: {
    bool moved = progress_seen(c, now);
    bool queued = braid_transport_write_queued(c->t) > 0;
    if (moved || (queued && now - c->wlast < o->write_timeout))
      deadline_set(c, now, o->linger_timeout);
    else
      braid__hs_abort(c, BRAID_ETIMEDOUT);
    break;
  }
  case CS_NEW:
  case CS_ABORTED:
  case CS_CLOSED:
    break;
  }
}

static void timer_cb(braid_timer_t *t, void *arg) {
  (void)t;
  hs_conn *c = arg;
  uint64_t now = braid_reactor_now(c->srv->r);
  if (now < c->deadline) {
    /* Early: the deadline moved on since the timer was armed. */
    c->armed = c->deadline;
    if (braid_timer_start(c->srv->r, &c->timer, c->deadline - now, timer_cb,
                          c) < 0)
      braid__hs_abort(c, BRAID_ENOMEM);
    return;
  }
  c->depth++;
  expired(c, now);
  c->depth--;
  if (c->depth == 0)
    braid__hs_process(c);
}

static void kick_cb(braid_timer_t *t, void *arg) {
  (void)t;
  braid__hs_process(arg);
}

void braid__hs_kick(hs_conn *c) {
  if (braid__hs_live(c) && !braid_timer_active(&c->kick))
    braid_timer_start(c->srv->r, &c->kick, 0, kick_cb, c);
}

/* ------------------------------------------------------------------------
 * Ending a connection
 * ------------------------------------------------------------------------ */

void braid__hs_abort(hs_conn *c, int reason) {
  if (c->state == CS_ABORTED || c->state == CS_CLOSED)
    return;
  c->abort_reason = reason;
  conn_enter(c, CS_ABORTED);
  if (c->t != NULL)
    braid_transport_abort(c->t);
}

void braid__hs_close(hs_conn *c) {
  if (!braid__hs_live(c))
    return;
  if (!c->peer_eof && (c->len > 0 || c->body_pending)) {
    braid_transport_shutdown_write(c->t);
    conn_enter(c, CS_LINGER);
    return;
  }
  braid_transport_close(c->t);
  conn_enter(c, CS_CLOSING);
}

void braid__hs_write_raw(hs_conn *c, const void *data, size_t len) {
  if (braid__hs_live(c))
    braid__hs_out_write(c, data, len);
}

/* Answer a request that never reached a handler (parse errors, 408, 413
 * for a declared length), or one whose handler timed out (503), and
 * close. */
void braid__hs_fail(hs_conn *c, int status, braid_http_req_t *q) {
  char buf[512];
  const char *reason = braid_http_reason(status);
  char body[128];
  int blen = snprintf(body, sizeof body, "%d %s\n", status, reason);
  int n = snprintf(buf, sizeof buf,
                   "HTTP/1.1 %d %s\r\nDate: %s\r\nServer: %s\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                   status, reason, braid__hs_date(c->srv), c->srv->server_name,
                   blen, body);
  if (n < 0 || (size_t)n >= sizeof buf)
    n = (int)sizeof buf - 1; /* cannot happen: server_name <= 128 bytes */
  braid__hs_write_raw(c, buf, (size_t)n);
  if (q != NULL)
    q->logged = true;
  braid__hs_access_log(c->srv, c, q, status, (uint64_t)blen);
  braid__hs_close(c);
}

/* ------------------------------------------------------------------------
 * The work loop
 * ------------------------------------------------------------------------ */

/* Parse the next request head from the buffer and dispatch it. Returns
 * false when there is none (yet), or the connection failed. */
static bool next_request(hs_conn *c) {
  braid_http_server_t *s = c->srv;
  /* The next request head, carrying on where the last segment left the
   * parser. */
  braid_http_request_t *pr = &c->pr;
  if (s->probe != NULL)
    s->probe(c->buf, c->len, pr, s->probe_arg);
  int n = braid_http_parse_request(c->buf, c->len, pr, &s->opts.limits);
  if (n == BRAID_HTTP_INCOMPLETE) {
    /* A partial head from a peer that sent its last byte: close. */
    if (c->peer_eof)
      braid__hs_close(c);
    return false;
  }
  if (n < 0) {
    braid__hs_fail(c, pr->error_status ? pr->error_status : 400, NULL);
    return false;
  }
  braid_http_req_t *q = braid__hs_req_new(c, pr, (size_t)n);
  braid_http_request_reset(pr); /* the next head starts afresh */
  if (q == NULL) {
    braid__hs_fail(c, 503, NULL);
    return false;
  }
  memmove(c->buf, c->buf + n, c->len - (size_t)n);
  c->len -= (size_t)n;
  c->bkind = q->bkind;
  c->bseen = 0;
  c->bleft = q->bkind == BRAID_HTTP_BODY_LENGTH ? q->clen : 0;
  memset(&c->dec, 0, sizeof c->dec);
  c->body_pending = q->bkind != BRAID_HTTP_BODY_NONE;
  if (q->bkind == BRAID_HTTP_BODY_LENGTH && q->clen > s->opts.max_body) {
    /* Refuse before the client sends a byte of it. */
    braid__hs_fail(c, 413, q);
    braid__hs_req_free(q);
    return false;
  }
  c->req = q;
  conn_enter(c, CS_HANDLER);
  braid__hs_handler_alive(c); /* a new request, if already there */
  braid__hs_dispatch(c, q);
  return true;
}

/* The request's body: deliver, skip, or end it. Returns true to go round
 * the loop again, false to stop. */
static bool body_step(hs_conn *c, braid_http_req_t *q) {
  if (c->wpaused)
    return false; /* stalled: nothing is delivered */
  if (q != NULL && (q->bstate != HS_BODY_READING || q->bpaused))
    return false; /* held for the handler */
  int rc = braid__hs_body_pump(c);
  if (!braid__hs_live(c))
    return false;
  if (rc < 0) {
    /* Bad framing, or over max_body: the rest cannot be parsed. Its
     * reader hears why and answers; the connection closes after that,
     * lingering, since more of the body may be on its way. */
    if (q != NULL && c->req == q) {
      q->close_after = true;
      braid__hs_body_end(q, c->bseen > c->srv->opts.max_body ? BRAID_ELIMIT
                                                             : BRAID_EPROTO);
      return true;
    }
    braid__hs_close(c);
    return false;
  }
  if (rc == 1) {
    c->body_pending = false;
    if (q != NULL && c->req == q)
      braid__hs_body_end(q, 0);
    return true;
  }
  if (c->req != q)
    return true; /* the handler finished inside a data callback */
  if (c->peer_eof && c->len == 0) {
    /* The peer ended its side in the middle of the body (bytes still
     * buffered wait for a paused reader or the end of a stall). */
    c->body_pending = false;
    if (q == NULL) {
      braid__hs_close(c);
      return false;
    }
    q->close_after = true;
    braid__hs_body_end(q, BRAID_ECONNRESET);
    return true;
  }
  return false; /* more bytes are needed */
}

void braid__hs_process(hs_conn *c) {
  if (!braid__hs_live(c))
    return;
  c->depth++;
  for (int guard = 0; guard < 1000000 && braid__hs_live(c); guard++) {
    braid_http_req_t *q = c->req;
    if (q != NULL && q->bend_pending) {
      q->bend_pending = false;
      braid__hs_body_end(q, q->bend_status);
      continue;
    }
    if (q != NULL && q->fstate == HS_FILE_DONE) {
      q->fstate = HS_FILE_NONE;
      q->guard++;
      q->fdone(q, q->fstatus, q->farg);
      q->guard--;
      if (q->finished && q->fstate == HS_FILE_NONE)
        braid__hs_req_done(q);
      continue;
    }
    if (q != NULL && q->fstate == HS_FILE_MORE) {
      if (braid_transport_closing(c->t)) {
        q->fstatus = BRAID_ECLOSED;
        q->fstate = HS_FILE_DONE;
      } else if (braid__hs_file_send_piece(q) < 0) {
        q->fstatus = BRAID_EIO;
        q->fstate = HS_FILE_DONE;
      }
      continue;
    }
    if (q != NULL && q->fstate == HS_FILE_PUMPING && !c->wpaused) {
      braid__hs_file_pump(q);
      if (q->fstate == HS_FILE_DONE)
        continue;
    }
    if (c->body_pending) {
      if (body_step(c, q))
        continue;
      break;
    }
    if (q != NULL || c->wpaused)
      break; /* one request at a time; none while the client does not read */
    if (c->len == 0) {
      /* Nothing more will come from a peer that shut down its side. */
      if (c->peer_eof)
        braid__hs_close(c);
      break;
    }
    if (!next_request(c))
      break;
  }
  c->depth--;
  braid__hs_settle(c);
}

/* ------------------------------------------------------------------------
 * Transport callbacks
 * ------------------------------------------------------------------------ */

/* hs_conn embeds its protocol first, so the protocol pointer is the
 * connection. */
static hs_conn *conn_of(braid_protocol_t *p) {
  return (hs_conn *)(void *)p;
}

static void conn_made(braid_protocol_t *p, braid_transport_t *t) {
  hs_conn *c = conn_of(p);
  c->t = t;
  if (c->state == CS_ABORTED) {
    /* The server was destroyed between building us and now. */
    braid_transport_abort(t);
    return;
  }
  /* Responses are written whole; Nagle would only delay the last piece. */
  braid_transport_set_nodelay(t, true);
  /* The first request's head is timed from the connection, as nginx's
   * client_header_timeout is: a client that connects and sends nothing
   * costs header_timeout, not idle_timeout. */
  conn_enter(c, CS_HEAD);
}

static void conn_data(braid_protocol_t *p, const void *data, size_t len) {
  hs_conn *c = conn_of(p);
  if (!braid__hs_live(c))
    return; /* lingering or closing: dropped */
  if (c->len + len > c->cap) {
    size_t cap = c->cap ? c->cap : 4096;
    while (cap < c->len + len)
      cap *= 2;
    char *b = braid_realloc(c->buf, cap);
    if (b == NULL) {
      braid__hs_abort(c, BRAID_ENOMEM);
      return;
    }
    c->buf = b;
    c->cap = cap;
  }
  memcpy(c->buf + c->len, data, len);
  c->len += len;
  /* Bytes of a body are signs of life; a head's are not (that is what
   * stops a client sending one byte every few seconds). The first byte of
   * the next request starts its head's clock: idle becomes head when
   * braid__hs_process settles, unless the head is complete already. */
  if (c->state == CS_BODY || c->state == CS_DISCARD)
    alive(c, c->srv->opts.body_timeout);
  braid__hs_process(c);
  /* Give back a large buffer once it is empty: idle connections stay
   * small. */
  if (c->len == 0 && c->cap > 16384) {
    braid_free(c->buf);
    c->buf = NULL;
    c->cap = 0;
  }
}

static void conn_eof(braid_protocol_t *p) {
  hs_conn *c = conn_of(p);
  c->peer_eof = true;
  if (c->state == CS_LINGER) {
    /* What lingering waited for: our FIN is queued, close after it. */
    braid_transport_close(c->t);
    conn_enter(c, CS_CLOSING);
    return;
  }
  if (!braid__hs_live(c))
    return;
  /* The client will send nothing more. A request in progress may still be
   * answered (a client may half-close after its request), but the
   * connection ends after it; a body cut short ends with
   * BRAID_ECONNRESET (braid__hs_process). */
  if (c->req != NULL)
    c->req->close_after = true;
  if (c->depth == 0)
    braid__hs_process(c);
  else
    braid__hs_kick(c);
}

static void conn_pause(braid_protocol_t *p) {
  hs_conn *c = conn_of(p);
  c->wpaused = true;
  if (!braid__hs_live(c))
    return;
  braid__hs_settle(c);
  braid_http_req_t *q = c->req;
  if (q != NULL && q->sops != NULL && q->sops->pause != NULL) {
    c->depth++;
    q->sops->pause(q, q->sarg);
    c->depth--;
    braid__hs_settle(c);
  }
}

static void conn_resume(braid_protocol_t *p) {
  hs_conn *c = conn_of(p);
  c->wpaused = false;
  /* The client read its way below the low-water mark: a response that
   * finished while it was slow is as good as sent. */
  braid__hs_out_sample(c, 0);
  braid__hs_logq_flush(c, 0);
  if (!braid__hs_live(c))
    return;
  braid_http_req_t *q = c->req;
  if (q != NULL && q->sops != NULL && q->sops->resume != NULL) {
    c->depth++;
    q->sops->resume(q, q->sarg);
    c->depth--;
  }
  if (c->depth == 0)
    braid__hs_process(c);
  else
    braid__hs_kick(c);
}

static void conn_lost(braid_protocol_t *p, int reason) {
  hs_conn *c = conn_of(p);
  braid_http_server_t *s = c->srv;
  /* An orderly close wrote everything queued; otherwise the last sample
   * (braid__hs_out_sample) is what is known to have gone out. */
  if (reason == 0 && c->abort_reason == 0)
    c->acked = c->out_total;
  if (c->abort_reason != 0)
    reason = c->abort_reason;
  if (reason == 0)
    reason = BRAID_ECONNRESET; /* lost before the response was finished */
  conn_enter(c, CS_CLOSED);
  if (braid_timer_active(&c->kick))
    braid_timer_cancel(&c->kick);
  /* Every request gets its log line, a response cut short included. */
  braid__hs_logq_flush(c, 1);
  if (c->req != NULL)
    braid__hs_req_detach(c, c->req, reason);
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  s->nconns--;
  braid_free(c->buf);
  braid_free(c);
  braid__hs_server_maybe_free(s);
}

static const braid_protocol_ops conn_ops = {
    .connection_made = conn_made,
    .data_received = conn_data,
    .eof_received = conn_eof,
    .connection_lost = conn_lost,
    .pause_writing = conn_pause,
    .resume_writing = conn_resume,
};

braid_protocol_t *braid__hs_conn_build(braid_factory_t *f,
                                       const braid_addr_t *peer) {
  braid_http_server_t *s = f->user;
  if (s->destroyed)
    return NULL;
  hs_conn *c = braid_calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->p.ops = &conn_ops;
  c->p.user = c;
  c->srv = s;
  c->state = CS_NEW;
  c->pr.headers = c->hdrs;
  c->pr.headers_cap = HS_MAX_HEADERS;
  if (peer != NULL)
    c->peer = *peer;
  c->next = s->conns;
  if (s->conns != NULL)
    s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  return &c->p;
}
