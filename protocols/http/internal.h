/* braid: internals shared by the HTTP/1.x files, and their test hooks.
 * Not installed. */
#ifndef BRAID_PROTOCOLS_HTTP_INTERNAL_H
#define BRAID_PROTOCOLS_HTTP_INTERNAL_H

#include <stddef.h>

#include "braid/http.h"

/* Character classes, one lookup per byte instead of chains of compares. */
enum {
  BRAID__HTTP_TCHAR = 1,  /* token character (RFC 9110 section 5.6.2) */
  BRAID__HTTP_FVCHAR = 2, /* allowed in a field value or reason phrase:
                             HTAB, SP, VCHAR, obs-text */
  BRAID__HTTP_TARGET = 4, /* allowed in a request-target: VCHAR */
};

extern const unsigned char braid__http_chars[256];

#define BRAID__HTTP_IS(cls, c)                                                 \
  ((braid__http_chars[(unsigned char)(c)] & (cls)) != 0)

/* Test hook: the server calls `cb` before each request-head parse with
 * the bytes and the parser state it is about to pass, so a test can see
 * how much the parser is asked to look at again (a head that trickles in
 * must not be re-parsed from its start on every segment). NULL: none. */
typedef void (*braid__http_parse_probe_cb)(const char *buf, size_t len,
                                           const braid_http_request_t *state,
                                           void *arg);
void braid__http_server_set_parse_probe(braid_http_server_t *srv,
                                        braid__http_parse_probe_cb cb,
                                        void *arg);

/* The server connection's states (the diagram is at the top of
 * protocols/http/server_conn.c). Here for the test hook below. */
typedef enum braid__http_conn_state {
  BRAID__HTTP_CS_NEW,     /* built, connection_made not yet called */
  BRAID__HTTP_CS_HEAD,    /* reading a request head */
  BRAID__HTTP_CS_IDLE,    /* keep-alive: waiting for the next request */
  BRAID__HTTP_CS_HANDLER, /* dispatched: waiting for the handler */
  BRAID__HTTP_CS_BODY,    /* reading a body the handler asked for */
  BRAID__HTTP_CS_DISCARD, /* skipping a body nobody read */
  BRAID__HTTP_CS_WRITING, /* waiting for the peer to take a file piece */
  BRAID__HTTP_CS_STALLED, /* waiting for the peer to read (write-stalled) */
  BRAID__HTTP_CS_CLOSING, /* flushing, then closing */
  BRAID__HTTP_CS_LINGER,  /* lingering close: reading until the peer's EOF */
  BRAID__HTTP_CS_ABORTED, /* aborted: connection_lost is on its way */
  BRAID__HTTP_CS_CLOSED,  /* connection_lost ran */
} braid__http_conn_state;

/* "head", "idle", ... */
const char *braid__http_conn_state_name(braid__http_conn_state st);

/* Test hook: the server calls `cb` on every state change of every
 * connection (`conn` tells connections apart). NULL: none. */
typedef void (*braid__http_state_probe_cb)(const void *conn,
                                           braid__http_conn_state from,
                                           braid__http_conn_state to,
                                           void *arg);
void braid__http_server_set_state_probe(braid_http_server_t *srv,
                                        braid__http_state_probe_cb cb,
                                        void *arg);

#endif
