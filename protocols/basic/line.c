/* The line parser and the line receiver (Twisted's LineReceiver).
 *
 * The receiver keeps at most one partial line, bounded by the maximum
 * length plus the delimiter. Complete lines inside one read are passed on
 * as pointers into the read buffer. A partial line that completes in the
 * next read is finished by copying only the bytes up to its delimiter;
 * the lines after it in that read are again passed on without a copy. */
#include <string.h>

#include "braid/alloc.h"
#include "braid/basic.h"

ptrdiff_t braid_line_parse(braid_line_parser_t *st, const void *buf, size_t len,
                           const void *delim, size_t dlen, size_t max_len) {
  if (dlen == 0 || dlen > BRAID_LINE_DELIMITER_MAX || delim == NULL ||
      (buf == NULL && len > 0)) {
    st->error = BRAID_EINVAL;
    return -1;
  }
  if (len < dlen)
    return -2;
  const char *b = buf, *d = delim;
  /* A delimiter may start at any position up to len - dlen; starting past
   * max_len it would end a line that is too long, so the scan stops there
   * and the buffer a caller keeps stays bounded. */
  size_t last = len - dlen;
  size_t lim = last < max_len ? last : max_len;
  size_t i = st->scanned_;
  while (i <= lim) {
    const char *p = memchr(b + i, (unsigned char)d[0], lim - i + 1);
    if (p == NULL) {
      i = lim + 1;
      break;
    }
    i = (size_t)(p - b);
    if (memcmp(p + 1, d + 1, dlen - 1) == 0) {
      st->scanned_ = 0;
      return (ptrdiff_t)(i + dlen);
    }
    i++;
  }
  if (last >= max_len) {
    /* Every position a delimiter could start at without making the line
     * too long was checked. */
    st->error = BRAID_ELIMIT;
    return -1;
  }
  st->scanned_ = i;
  return -2;
}

/* ------------------------------------------------------------------------
 * The receiver
 * ------------------------------------------------------------------------ */

#define BRAID__LR(p) ((braid_line_receiver_t *)(void *)(p))

static const char *braid__lr_delim(const braid_line_receiver_t *lr,
                                   size_t *dlen) {
  if (lr->dlen_ == 0) {
    *dlen = 2;
    return "\r\n";
  }
  *dlen = lr->dlen_;
  return lr->delim_;
}

static size_t braid__lr_max(const braid_line_receiver_t *lr) {
  return lr->max_len_ ? lr->max_len_ : BRAID_LINE_MAX_DEFAULT;
}

static void braid__lr_drop(braid_line_receiver_t *lr) {
  braid_free(lr->buf_);
  lr->buf_ = NULL;
  lr->buf_len_ = lr->buf_cap_ = 0;
  memset(&lr->st_, 0, sizeof lr->st_);
}

/* Append to the partial line. Growth is bounded by the parser: it fails
 * before a line can need more than max + delimiter - 1 bytes. */
static int braid__lr_append(braid_line_receiver_t *lr, const char *c,
                            size_t n) {
  if (n == 0)
    return 0;
  size_t need = lr->buf_len_ + n;
  if (need > lr->buf_cap_) {
    size_t cap = lr->buf_cap_ ? lr->buf_cap_ : 128;
    while (cap < need)
      cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *nb = braid_realloc(lr->buf_, cap);
    if (nb == NULL)
      return BRAID_ENOMEM;
    lr->buf_ = nb;
    lr->buf_cap_ = cap;
  }
  memcpy(lr->buf_ + lr->buf_len_, c, n);
  lr->buf_len_ = need;
  return 0;
}

/* While skipping an over-long line only the last dlen - 1 bytes matter: a
 * delimiter may straddle them and the next read. */
static void braid__lr_trim(braid_line_receiver_t *lr, size_t dlen) {
  if (lr->buf_len_ > dlen - 1) {
    memmove(lr->buf_, lr->buf_ + lr->buf_len_ - (dlen - 1), dlen - 1);
    lr->buf_len_ = dlen - 1;
  }
  lr->st_.scanned_ = 0;
}

/* A line is complete: hand it over, or end the skipping of an over-long
 * one. */
static void braid__lr_line(braid_line_receiver_t *lr, const char *line,
                           size_t len) {
  if (lr->skipping_) {
    lr->skipping_ = 0;
    return;
  }
  lr->ops->line_received(lr, line, len);
}

static void braid__lr_too_long(braid_line_receiver_t *lr) {
  braid_transport_t *t = lr->proto.transport;
  if (lr->ops->line_too_long == NULL) {
    braid__lr_drop(lr);
    braid_transport_close(t);
    return;
  }
  size_t dlen;
  braid__lr_delim(lr, &dlen);
  lr->skipping_ = 1;
  braid__lr_trim(lr, dlen);
  lr->ops->line_too_long(lr);
}

static void braid__lr_nomem(braid_line_receiver_t *lr) {
  /* The partial line cannot be kept, so the stream is lost: abort rather
   * than deliver a line with a hole in it. */
  braid__lr_drop(lr);
  braid_transport_abort(lr->proto.transport);
}

/* Line mode: consume bytes from c (at least one unless the connection
 * went away), delivering at most one line. Returns the bytes used. */
static size_t braid__lr_step(braid_line_receiver_t *lr, const char *c,
                             size_t len) {
  size_t dlen;
  const char *delim = braid__lr_delim(lr, &dlen);
  size_t max = lr->skipping_ ? SIZE_MAX : braid__lr_max(lr);
  size_t b = lr->buf_len_;
  ptrdiff_t r;
  if (b == 0) {
    braid_line_parser_t st = {0};
    r = braid_line_parse(&st, c, len, delim, dlen, max);
    if (r >= 0) {
      braid__lr_line(lr, c, (size_t)r - dlen);
      return (size_t)r;
    }
    if (r == -1) {
      braid__lr_too_long(lr);
      return 0; /* the skip goes on from the same bytes */
    }
    if (lr->skipping_) {
      /* Keep only what a straddling delimiter needs. */
      size_t keep = len < dlen - 1 ? len : dlen - 1;
      if (braid__lr_append(lr, c + len - keep, keep) < 0)
        braid__lr_nomem(lr);
      lr->st_.scanned_ = 0;
      return len;
    }
    if (braid__lr_append(lr, c, len) < 0) {
      braid__lr_nomem(lr);
      return len;
    }
    lr->st_.scanned_ = st.scanned_;
    return len;
  }
  /* A partial line is buffered. First look for a delimiter that starts in
   * the buffer and ends in c: appending dlen - 1 bytes is enough. */
  size_t k = len < dlen - 1 ? len : dlen - 1;
  if (braid__lr_append(lr, c, k) < 0) {
    braid__lr_nomem(lr);
    return len;
  }
  r = braid_line_parse(&lr->st_, lr->buf_, b + k, delim, dlen, max);
  if (r >= 0) {
    /* The parser saw the buffer before, so this delimiter ends in c. */
    size_t used = (size_t)r - b;
    braid__lr_line(lr, lr->buf_, (size_t)r - dlen);
    lr->buf_len_ = 0;
    memset(&lr->st_, 0, sizeof lr->st_);
    return used;
  }
  if (r == -1) {
    lr->buf_len_ = b;
    braid__lr_too_long(lr);
    return 0;
  }
  if (k == len) {
    if (lr->skipping_)
      braid__lr_trim(lr, dlen);
    return len;
  }
  /* No straddling delimiter, and since the parse returned -2, b <= max:
   * the line ends inside c or not at all in this read. */
  lr->buf_len_ = b;
  braid_line_parser_t st = {0};
  r = braid_line_parse(&st, c, len, delim, dlen,
                       max == SIZE_MAX ? SIZE_MAX : max - b);
  if (r >= 0) {
    size_t n = (size_t)r - dlen;
    if (lr->skipping_) {
      lr->buf_len_ = 0;
      braid__lr_line(lr, NULL, 0);
    } else if (braid__lr_append(lr, c, n) < 0) {
      braid__lr_nomem(lr);
      return len;
    } else {
      braid__lr_line(lr, lr->buf_, b + n);
      lr->buf_len_ = 0;
    }
    memset(&lr->st_, 0, sizeof lr->st_);
    return (size_t)r;
  }
  if (r == -1) {
    braid__lr_too_long(lr);
    return 0;
  }
  if (lr->skipping_) {
    /* len >= dlen - 1 here, so the tail alone replaces the buffer. */
    lr->buf_len_ = 0;
    if (braid__lr_append(lr, c + len - (dlen - 1), dlen - 1) < 0)
      braid__lr_nomem(lr);
    lr->st_.scanned_ = 0;
    return len;
  }
  if (braid__lr_append(lr, c, len) < 0) {
    braid__lr_nomem(lr);
    return len;
  }
  lr->st_.scanned_ = b + st.scanned_;
  return len;
}

/* Run bytes through the current mode until they are used up or the
 * connection goes away (no data follows a close, so none is parsed). */
static void braid__lr_feed(braid_line_receiver_t *lr, const char *c,
                           size_t len) {
  braid_transport_t *t = lr->proto.transport;
  while (len > 0 && !braid_transport_closing(t)) {
    size_t n;
    if (lr->raw_) {
      n = len;
      if (lr->raw_left_ != BRAID_RAW_UNLIMITED) {
        if (lr->raw_left_ < n)
          n = (size_t)lr->raw_left_;
        lr->raw_left_ -= n;
        /* Back in line mode before the call, so that the callback may
         * start another counted section (chunked bodies do). */
        if (lr->raw_left_ == 0)
          lr->raw_ = 0;
      }
      lr->ops->raw_data_received(lr, c, n);
    } else {
      n = braid__lr_step(lr, c, len);
    }
    c += n;
    len -= n;
  }
}

static void braid__lr_made(braid_protocol_t *p, braid_transport_t *t) {
  (void)t;
  braid_line_receiver_t *lr = BRAID__LR(p);
  if (lr->ops->connection_made != NULL)
    lr->ops->connection_made(lr);
}

static void braid__lr_data(braid_protocol_t *p, const void *data, size_t len) {
  braid_line_receiver_t *lr = BRAID__LR(p);
  if (lr->raw_ && lr->buf_len_ > 0) {
    /* Raw mode was entered between reads with a partial line buffered:
     * those bytes come first, and are raw now. */
    char *old = lr->buf_;
    size_t n = lr->buf_len_;
    lr->buf_ = NULL;
    lr->buf_len_ = lr->buf_cap_ = 0;
    memset(&lr->st_, 0, sizeof lr->st_);
    braid__lr_feed(lr, old, n);
    braid_free(old);
  }
  braid__lr_feed(lr, data, len);
}

static void braid__lr_eof(braid_protocol_t *p) {
  braid_line_receiver_t *lr = BRAID__LR(p);
  lr->ops->eof_received(lr);
}

static void braid__lr_lost(braid_protocol_t *p, int reason) {
  braid_line_receiver_t *lr = BRAID__LR(p);
  braid__lr_drop(lr);
  if (lr->ops->connection_lost != NULL)
    lr->ops->connection_lost(lr, reason);
}

static void braid__lr_pause(braid_protocol_t *p) {
  braid_line_receiver_t *lr = BRAID__LR(p);
  if (lr->ops->pause_writing != NULL)
    lr->ops->pause_writing(lr);
}

static void braid__lr_resume(braid_protocol_t *p) {
  braid_line_receiver_t *lr = BRAID__LR(p);
  if (lr->ops->resume_writing != NULL)
    lr->ops->resume_writing(lr);
}

/* eof_received is forwarded only when the user has one: the NULL slot is
 * what tells the transport the protocol is not half-close aware. */
static const braid_protocol_ops braid__lr_ops = {
    .connection_made = braid__lr_made,
    .data_received = braid__lr_data,
    .eof_received = braid__lr_eof,
    .connection_lost = braid__lr_lost,
    .pause_writing = braid__lr_pause,
    .resume_writing = braid__lr_resume,
};

static const braid_protocol_ops braid__lr_ops_noeof = {
    .connection_made = braid__lr_made,
    .data_received = braid__lr_data,
    .connection_lost = braid__lr_lost,
    .pause_writing = braid__lr_pause,
    .resume_writing = braid__lr_resume,
};

void braid_line_receiver_init(braid_line_receiver_t *lr,
                              const braid_line_receiver_ops *ops, void *user) {
  memset(lr, 0, sizeof *lr);
  lr->ops = ops;
  lr->user = user;
  lr->proto.ops = ops != NULL && ops->eof_received != NULL
                      ? &braid__lr_ops
                      : &braid__lr_ops_noeof;
  lr->proto.user = lr;
}

int braid_line_receiver_set_delimiter(braid_line_receiver_t *lr,
                                      const void *delim, size_t len) {
  if (lr == NULL || delim == NULL || len == 0 || len > BRAID_LINE_DELIMITER_MAX)
    return BRAID_EINVAL;
  memcpy(lr->delim_, delim, len);
  lr->dlen_ = (uint8_t)len;
  /* What was scanned for the old delimiter says nothing about the new. */
  lr->st_.scanned_ = 0;
  return 0;
}

int braid_line_receiver_set_max_length(braid_line_receiver_t *lr, size_t max) {
  if (lr == NULL)
    return BRAID_EINVAL;
  lr->max_len_ = max;
  return 0;
}

int braid_line_receiver_set_raw_mode(braid_line_receiver_t *lr,
                                     uint64_t count) {
  if (lr == NULL || lr->ops == NULL || lr->ops->raw_data_received == NULL)
    return BRAID_EINVAL;
  if (count == 0)
    return 0; /* nothing to deliver raw: stay in line mode */
  if (lr->skipping_) {
    /* The rest of an over-long line is not data for the raw handler. */
    lr->skipping_ = 0;
    lr->buf_len_ = 0;
    memset(&lr->st_, 0, sizeof lr->st_);
  }
  lr->raw_ = 1;
  lr->raw_left_ = count;
  return 0;
}

int braid_line_receiver_set_line_mode(braid_line_receiver_t *lr) {
  if (lr == NULL)
    return BRAID_EINVAL;
  lr->raw_ = 0;
  lr->raw_left_ = 0;
  return 0;
}

bool braid_line_receiver_raw(const braid_line_receiver_t *lr) {
  return lr != NULL && lr->raw_;
}

int braid_line_receiver_send_line(braid_line_receiver_t *lr, const void *line,
                                  size_t len) {
  if (lr == NULL || (line == NULL && len > 0))
    return BRAID_EINVAL;
  size_t dlen;
  const char *delim = braid__lr_delim(lr, &dlen);
  braid_iovec_t iov[2] = {{line, len}, {delim, dlen}};
  return braid_transport_writev(lr->proto.transport, iov, 2);
}

braid_transport_t *braid_line_receiver_transport(braid_line_receiver_t *lr) {
  return lr != NULL ? lr->proto.transport : NULL;
}
