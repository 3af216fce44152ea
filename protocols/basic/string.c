/* The string receiver: netstrings and length-prefixed messages over a
 * transport (Twisted's NetstringReceiver and IntNStringReceiver).
 *
 * Strings complete inside one read are passed on as pointers into the
 * read buffer. A string split across reads is collected in a buffer, and
 * only its own bytes are copied: once the header is parsed the receiver
 * knows the string's size and takes exactly that much from the next read,
 * so the strings after it are again passed on without a copy. */
#include <string.h>

#include "braid/alloc.h"
#include "braid/basic.h"

#define BRAID__SR(p) ((braid_string_receiver_t *)(void *)(p))

static size_t braid__sr_max(const braid_string_receiver_t *sr) {
  return sr->max_len_ ? sr->max_len_ : BRAID_STRING_MAX_DEFAULT;
}

static void braid__sr_drop(braid_string_receiver_t *sr) {
  braid_free(sr->buf_);
  sr->buf_ = NULL;
  sr->buf_len_ = sr->buf_cap_ = 0;
  memset(&sr->st_, 0, sizeof sr->st_);
}

static int braid__sr_append(braid_string_receiver_t *sr, const void *c,
                            size_t n) {
  if (n == 0)
    return 0;
  size_t need = sr->buf_len_ + n;
  if (need > sr->buf_cap_) {
    size_t cap = sr->buf_cap_ ? sr->buf_cap_ : 128;
    while (cap < need)
      cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *nb = braid_realloc(sr->buf_, cap);
    if (nb == NULL)
      return BRAID_ENOMEM;
    sr->buf_ = nb;
    sr->buf_cap_ = cap;
  }
  memcpy(sr->buf_ + sr->buf_len_, c, n);
  sr->buf_len_ = need;
  return 0;
}

/* The stream is unusable after malformed input: there is no way to find
 * where the next string starts. */
static void braid__sr_fail(braid_string_receiver_t *sr, int err) {
  sr->failed_ = 1;
  braid__sr_drop(sr);
  if (sr->ops->string_error != NULL)
    sr->ops->string_error(sr, err);
  else if (err == BRAID_ENOMEM)
    braid_transport_abort(sr->proto.transport);
  else
    braid_transport_close(sr->proto.transport);
}

/* Bytes of the buffered string still to come, when its header is known;
 * otherwise enough to complete any header. */
static size_t braid__sr_want(const braid_string_receiver_t *sr) {
  if (sr->st_.state_ == 0)
    return BRAID_STRING_HEADER_MAX;
  size_t total = sr->st_.pos_ + (size_t)sr->st_.len_ +
                 (sr->framing_ == BRAID_NETSTRING ? 1u : 0u);
  return total - sr->buf_len_;
}

static void braid__sr_data(braid_protocol_t *p, const void *data, size_t len) {
  braid_string_receiver_t *sr = BRAID__SR(p);
  braid_transport_t *t = p->transport;
  const char *c = data;
  size_t max = braid__sr_max(sr);
  while (len > 0 && !sr->failed_ && !braid_transport_closing(t)) {
    const void *payload;
    size_t plen;
    ptrdiff_t r;
    if (sr->buf_len_ == 0) {
      braid_string_parser_t st = {0};
      r = braid_string_parse(&st, sr->framing_, c, len, max, &payload, &plen);
      if (r >= 0) {
        sr->ops->string_received(sr, payload, plen);
        c += r;
        len -= (size_t)r;
        continue;
      }
      if (r == -1) {
        braid__sr_fail(sr, st.error);
        return;
      }
      if (braid__sr_append(sr, c, len) < 0) {
        braid__sr_fail(sr, BRAID_ENOMEM);
        return;
      }
      sr->st_ = st;
      return;
    }
    size_t take = braid__sr_want(sr);
    if (take > len)
      take = len;
    size_t before = sr->buf_len_;
    if (braid__sr_append(sr, c, take) < 0) {
      braid__sr_fail(sr, BRAID_ENOMEM);
      return;
    }
    r = braid_string_parse(&sr->st_, sr->framing_, sr->buf_, sr->buf_len_, max,
                           &payload, &plen);
    if (r == -1) {
      braid__sr_fail(sr, sr->st_.error);
      return;
    }
    size_t used = take;
    if (r >= 0) {
      /* A header completed by a generous `take` may leave bytes of the
       * next string in the buffer: they were not used. */
      used = (size_t)r - before;
      sr->ops->string_received(sr, payload, plen);
      sr->buf_len_ = 0;
      memset(&sr->st_, 0, sizeof sr->st_);
    }
    c += used;
    len -= used;
  }
}

static void braid__sr_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)t;
  braid_string_receiver_t *sr = BRAID__SR(p);
  if (sr->ops->connection_made != NULL)
    sr->ops->connection_made(sr);
}

static void braid__sr_eof(braid_protocol_t *p) {
  braid_string_receiver_t *sr = BRAID__SR(p);
  sr->ops->eof_received(sr);
}

static void braid__sr_lost(braid_protocol_t *p, int reason) {
  braid_string_receiver_t *sr = BRAID__SR(p);
  braid__sr_drop(sr);
  if (sr->ops->connection_lost != NULL)
    sr->ops->connection_lost(sr, reason);
}

static void braid__sr_pause(braid_protocol_t *p) {
  braid_string_receiver_t *sr = BRAID__SR(p);
  if (sr->ops->pause_writing != NULL)
    sr->ops->pause_writing(sr);
}

static void braid__sr_resume(braid_protocol_t *p) {
  braid_string_receiver_t *sr = BRAID__SR(p);
  if (sr->ops->resume_writing != NULL)
    sr->ops->resume_writing(sr);
}

/* As for the line receiver: a NULL eof_received must reach the transport
 * as NULL, since that is what makes it close on EOF. */
static const braid_protocol_ops braid__sr_ops = {
    .connection_made = braid__sr_made,
    .data_received = braid__sr_data,
    .eof_received = braid__sr_eof,
    .connection_lost = braid__sr_lost,
    .pause_writing = braid__sr_pause,
    .resume_writing = braid__sr_resume,
};

static const braid_protocol_ops braid__sr_ops_noeof = {
    .connection_made = braid__sr_made,
    .data_received = braid__sr_data,
    .connection_lost = braid__sr_lost,
    .pause_writing = braid__sr_pause,
    .resume_writing = braid__sr_resume,
};

int braid_string_receiver_init(braid_string_receiver_t *sr,
                               braid_framing framing,
                               const braid_string_receiver_ops *ops,
                               void *user) {
  if (sr == NULL || ops == NULL || ops->string_received == NULL ||
      (framing != BRAID_NETSTRING && framing != BRAID_INT8 &&
       framing != BRAID_INT16 && framing != BRAID_INT32))
    return BRAID_EINVAL;
  memset(sr, 0, sizeof *sr);
  sr->ops = ops;
  sr->user = user;
  sr->framing_ = framing;
  sr->proto.ops =
      ops->eof_received != NULL ? &braid__sr_ops : &braid__sr_ops_noeof;
  sr->proto.user = sr;
  return 0;
}

int braid_string_receiver_set_max_length(braid_string_receiver_t *sr,
                                         size_t max) {
  if (sr == NULL)
    return BRAID_EINVAL;
  sr->max_len_ = max;
  return 0;
}

int braid_string_receiver_send(braid_string_receiver_t *sr, const void *data,
                               size_t len) {
  if (sr == NULL || (data == NULL && len > 0))
    return BRAID_EINVAL;
  char hdr[BRAID_STRING_HEADER_MAX];
  int n = braid_string_header(sr->framing_, len, hdr);
  if (n < 0)
    return n;
  braid_iovec_t iov[3] = {{hdr, (size_t)n}, {data, len}, {",", 1}};
  return braid_transport_writev(sr->proto.transport, iov,
                                sr->framing_ == BRAID_NETSTRING ? 3 : 2);
}

braid_transport_t *
braid_string_receiver_transport(braid_string_receiver_t *sr) {
  return sr != NULL ? sr->proto.transport : NULL;
}
