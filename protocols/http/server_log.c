/* The HTTP server's access log: one line per request in the Common Log
 * Format, through braid_reactor_log() (domain "access", level INFO). */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "protocols/http/server_internal.h"

void braid__hs_access_log(braid_http_server_t *s, hs_conn *c,
                          const braid_http_req_t *q, int status,
                          uint64_t bytes) {
  if (s->opts.no_access_log)
    return;
  char peer[80] = "-";
  braid_addr_t a;
  if (c != NULL) {
    a = c->peer;
    if (braid_addr_format(&a, peer, sizeof peer) > 0) {
      /* CLF wants the host alone: drop ":port" (and IPv6 brackets). */
      char *colon = strrchr(peer, ':');
      if (colon != NULL && braid_addr_family(&a) != 0 &&
          braid_addr_port(&a) != 0)
        *colon = '\0';
      if (peer[0] == '[') {
        size_t l = strlen(peer);
        memmove(peer, peer + 1, l);
        if (l >= 2 && peer[l - 2] == ']')
          peer[l - 2] = '\0';
      }
    }
  }
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  char when[40];
  snprintf(when, sizeof when, "%02d/%s/%04d:%02d:%02d:%02d +0000", tm.tm_mday,
           braid__hs_months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour,
           tm.tm_min, tm.tm_sec);
  /* The request line is escaped: a log line must stay one line and must
   * not let a client forge quotes (CVE-2009-4487 style log injection). */
  char line[512];
  size_t o = 0;
  if (q != NULL) {
    const braid_http_view_t parts[2] = {q->method, q->target};
    for (int i = 0; i < 2; i++) {
      for (size_t k = 0; k < parts[i].len && o + 8 < sizeof line - 16; k++) {
        unsigned char ch = (unsigned char)parts[i].ptr[k];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\')
          o += (size_t)snprintf(line + o, sizeof line - o, "\\x%02x", ch);
        else
          line[o++] = (char)ch;
      }
      line[o++] = ' ';
    }
    o += (size_t)snprintf(line + o, sizeof line - o, "HTTP/1.%d", q->minor);
  } else {
    line[o++] = '-';
  }
  line[o] = '\0';
  braid_reactor_log(s->r, BRAID_LOG_INFO, "access",
                    "%s - - [%s] \"%s\" %d %llu", peer, when, line, status,
                    (unsigned long long)bytes);
}

/* `lost`: the connection went away first, so the body bytes are those
 * written by then (chunk framing included, never more than the body), and
 * a request that had no response yet is 499, nginx's "client closed
 * request". */
void braid__hs_req_log(hs_conn *c, braid_http_req_t *q, int lost) {
  if (q->logged)
    return;
  q->logged = true;
  int status = q->status;
  uint64_t body = q->no_body ? 0 : q->sent;
  if (lost && !q->head_sent) {
    status = 499;
    body = 0;
  } else if (lost) {
    uint64_t w = c->acked > q->body_at ? c->acked - q->body_at : 0;
    if (w < body)
      body = w;
  }
  braid__hs_access_log(c->srv, c, q, status, body);
}

/* The finished response that waited for a slow client is out (or lost). */
void braid__hs_logq_flush(hs_conn *c, int lost) {
  braid_http_req_t *q = c->logq;
  if (q == NULL)
    return;
  c->logq = NULL;
  braid__hs_req_log(c, q, lost);
  braid__hs_req_free(q);
}
