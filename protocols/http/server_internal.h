/* braid: the HTTP server's private header, shared by its files:
 *
 *   server.c           the server object: options, listeners, lifetime
 *   server_conn.c      a connection: the state machine and its timers
 *   server_request.c   the request object and the request body
 *   server_response.c  responses: heads, bodies, chunks, files, accounting
 *   server_router.c    routes and dispatch
 *   server_log.c       the access log
 *   util.c             reason phrases, HTTP dates, percent-decoding
 *
 * Not installed. Nothing here is for the HTTP client or the parser. */
#ifndef BRAID_PROTOCOLS_HTTP_SERVER_INTERNAL_H
#define BRAID_PROTOCOLS_HTTP_SERVER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/braid.h"
#include "braid/http.h"
#include "protocols/http/internal.h"

#define HS_READ_MAX (64u * 1024u) /* bytes buffered past a head */
/* Body bytes from the caller's memory that cannot go out at once are
 * handed to the transport in owned pieces of at most this size: each
 * piece's release tells how far the client has read (see
 * braid__hs_out_sample), so the access log and the write timeout know it
 * to within a piece. */
#define HS_OUT_PIECE (64u * 1024u)
#define HS_FILE_PIECE (64u * 1024u) /* fallback file read size */
#define HS_MAX_HEADERS 100
#define HS_SENDFILE_MIN (32u * 1024u) /* smaller files are read */
/* A sendfile is queued in pieces: the release of each written piece tells
 * how far the client has read (the access log's byte count on a reset,
 * the write timeout's progress), and the next piece is queued then. The
 * pieces grow with what was sent, from HS_OUT_PIECE up to this, so a
 * count is never short by more than 64 KiB or half of it, and a large
 * file costs few pieces. */
#define HS_SENDFILE_PIECE (1024u * 1024u)
#define HS_MAX_LISTENERS 8

typedef struct hs_conn hs_conn;
typedef braid__http_conn_state hs_state;

typedef struct hs_route {
  char *method; /* NULL: any */
  char *prefix;
  size_t plen;
  braid_http_handler_cb cb;
  void *arg;
} hs_route;

struct braid_http_server {
  braid_reactor_t *r;
  braid_http_server_options opts; /* every timeout filled in */
  char *server_name;
  hs_route *routes;
  size_t nroutes, cap;
  braid_factory_t factory;
  braid_listener_t *listeners[HS_MAX_LISTENERS];
  size_t nlisteners;
  hs_conn *conns; /* doubly linked */
  size_t nconns;
  int destroyed;
  bool draining; /* braid_http_server_drain: no more keep-alive */
  int64_t date_sec;
  char date[32];
  /* Test hooks (internal.h). */
  braid__http_parse_probe_cb probe;
  void *probe_arg;
  braid__http_state_probe_cb state_probe;
  void *state_probe_arg;
};

/* A connection. Its phase is `state` alone (see the diagram at the top of
 * server_conn.c); the other fields are the facts the state is decided
 * from (what the transport said, what is buffered, the request) and the
 * data each state's timer needs. */
struct hs_conn {
  braid_protocol_t p; /* first: the protocol pointer is the connection */
  braid_http_server_t *srv;
  braid_transport_t *t;
  hs_conn *prev, *next;
  hs_state state;
  braid_timer_t timer; /* the state's timeout: one timer, one state */
  braid_timer_t kick;  /* braid__hs_process from the loop */
  int depth;           /* calls into us on the stack (see server_conn.c) */
  /* Facts from the transport. */
  bool wpaused;     /* it asked us to stop producing (pause_writing) */
  bool peer_eof;    /* the peer shut down its side */
  int abort_reason; /* why we aborted (a timeout, the server going away) */
  /* Input: unparsed bytes, and the head parser's state, kept between
   * segments so a head that trickles in is scanned once, not from its
   * start on every segment (the parser's resume hint,
   * braid/http_parser.h). Reset after every head. */
  char *buf;
  size_t len, cap;
  braid_http_request_t pr;
  braid_http_header_t hdrs[HS_MAX_HEADERS];
  /* The request being answered, and a finished one whose response a slow
   * client is still reading (logged when it has, or when the connection
   * is lost). */
  braid_http_req_t *req;
  braid_http_req_t *logq;
  /* The body of the current (or just finished) request: whether bytes of
   * it are still to come off the wire, and how they are framed. */
  bool body_pending;
  braid_http_body_kind_t bkind;
  uint64_t bleft; /* LENGTH: bytes to come */
  uint64_t bseen; /* bytes delivered or discarded */
  braid_http_chunked_decoder_t dec;
  /* Output accounting (braid__hs_out_sample): bytes handed to the
   * transport, and how many of them it has written (a lower bound). */
  uint64_t out_total;
  uint64_t acked;
  /* Timer data: the state's deadline, and when the timer is armed for
   * (at or before it, see deadline_set in server_conn.c). Progress
   * timers (writing, stalled, closing, linger): `acked` when progress was
   * last seen, and when. */
  uint64_t deadline;
  uint64_t armed;
  uint64_t wmark;
  uint64_t wlast;
  braid_addr_t peer;
};

/* Reading the request body, from the handler's side. */
typedef enum hs_body {
  HS_BODY_UNASKED, /* braid_http_read_body not called */
  HS_BODY_READING, /* data callbacks flow (unless paused) */
  HS_BODY_ENDED,   /* `end` was called, or the handler finished */
} hs_body;

/* braid_http_sendfile's progress. */
typedef enum hs_file {
  HS_FILE_NONE,
  HS_FILE_SENDING, /* a sendfile piece is queued on the transport */
  HS_FILE_MORE,    /* that piece was written: queue the next one */
  HS_FILE_PUMPING, /* no sendfile: read pieces while the transport takes
                      them */
  HS_FILE_DONE,    /* `done` is due from the loop */
} hs_file;

struct braid_http_req {
  hs_conn *c; /* NULL once detached from its connection (a zombie) */
  braid_reactor_t *r;
  char *head; /* a copy of the request head */
  braid_http_header_t *hdrs;
  size_t nhdrs;
  braid_http_view_t method, target, query;
  char *path;
  const char *rest;
  int minor;
  bool is_head, keep_alive, expect;
  braid_http_body_kind_t bkind;
  uint64_t clen;
  /* Body in. */
  const braid_http_body_ops *bops;
  void *barg;
  hs_body bstate;
  bool bpaused;
  bool bend_pending; /* end(bend_status) is due from the loop */
  int bend_status;
  /* Response out. */
  int status;
  bool head_sent, chunked, no_body, close_after, finished, logged;
  uint64_t length, sent;
  uint64_t body_at; /* c->out_total where the body starts */
  const braid_http_stream_ops *sops;
  void *sarg;
  void *user;
  int guard; /* inside a callback that must not free the request */
  /* braid_http_sendfile. */
  hs_file fstate;
  int ffd;
  int fstatus;
  uint64_t foff, fleft;
  braid_http_file_cb fdone;
  void *farg;
};

/* server.c */
const char *braid__hs_date(braid_http_server_t *s);
void braid__hs_server_maybe_free(braid_http_server_t *s);

/* server_conn.c */
braid_protocol_t *braid__hs_conn_build(braid_factory_t *f,
                                       const braid_addr_t *peer);
/* Run the connection's pending work (body, file callbacks, the next
 * request) and settle its state. */
void braid__hs_process(hs_conn *c);
/* braid__hs_process from the loop, at depth 0. */
void braid__hs_kick(hs_conn *c);
/* Decide the state from the facts again (after a handler paused its
 * body, say). */
void braid__hs_settle(hs_conn *c);
/* The handler did something: its silence timer starts again. */
void braid__hs_handler_alive(hs_conn *c);
/* Close after the queued output (lingering when request bytes may still
 * be on their way), abort, or answer with an error and close. */
void braid__hs_close(hs_conn *c);
void braid__hs_abort(hs_conn *c, int reason);
void braid__hs_fail(hs_conn *c, int status, braid_http_req_t *q);
/* Write bytes that no response object frames (100 Continue, error
 * answers), only while the connection is live. */
void braid__hs_write_raw(hs_conn *c, const void *data, size_t len);
/* Whether the connection may still write and read (not closing, aborted
 * or gone). */
bool braid__hs_live(const hs_conn *c);

/* server_request.c */
braid_http_req_t *braid__hs_req_new(hs_conn *c, const braid_http_request_t *pr,
                                    size_t n);
int braid__hs_req_path(braid_http_req_t *q);
void braid__hs_req_free(braid_http_req_t *q);
/* Cut the request from its connection (lost, or its handler timed out):
 * log it, end its body and file with `reason`, call `closed`, and free it
 * unless the handler still holds it (a zombie, freed by finish). */
void braid__hs_req_detach(hs_conn *c, braid_http_req_t *q, int reason);
void braid__hs_body_end(braid_http_req_t *q, int status);
/* Decode body bytes from the buffer: to the reading handler, else
 * dropped. 1 complete, 0 more needed or delivery stopped, -1 framing or
 * size error. */
int braid__hs_body_pump(hs_conn *c);

/* server_response.c */
/* Update c->acked from the transport's queue (see "Output accounting"
 * in server_response.c); `in_release`: called from a release callback. */
void braid__hs_out_sample(hs_conn *c, int in_release);
/* Write through the accounting: counted in c->out_total. */
int braid__hs_out_write(hs_conn *c, const void *data, size_t len);
int braid__hs_field_ok(const char *s);
/* The response is complete: log it (or leave it for when the client has
 * read it), decide about the connection, move on. */
void braid__hs_req_done(braid_http_req_t *q);
int braid__hs_file_send_piece(braid_http_req_t *q);
void braid__hs_file_pump(braid_http_req_t *q);

/* server_router.c */
void braid__hs_dispatch(hs_conn *c, braid_http_req_t *q);
void braid__hs_routes_free(braid_http_server_t *s);

/* util.c: "Jan".."Dec", for HTTP dates and the access log's. */
extern const char braid__hs_months[12][4];
/* util.c: a copy of s from braid_malloc, or NULL without memory. */
char *braid__hs_strdup(const char *s);

/* server_log.c */
void braid__hs_access_log(braid_http_server_t *s, hs_conn *c,
                          const braid_http_req_t *q, int status,
                          uint64_t bytes);
/* q's line, once; `lost`: the connection went first (see http.h). */
void braid__hs_req_log(hs_conn *c, braid_http_req_t *q, int lost);
void braid__hs_logq_flush(hs_conn *c, int lost);

#endif
