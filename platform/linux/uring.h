/* io_uring for braid, split in two: uring_ring.c drives the rings (setup,
 * mapping, the opcode probe, provided buffer rings, SQE reservation,
 * submission and waiting), uring.c maps braid's ops onto them. This header
 * is what they share. Linux 5.19 and later; see uring.c. */
#ifndef BRAID_PLATFORM_LINUX_URING_H
#define BRAID_PLATFORM_LINUX_URING_H

#include <linux/io_uring.h>
#include <stdatomic.h>

#include "core/internal.h"

#define BRAID__URING_SQ 256  /* SQEs queued between two submissions */
#define BRAID__URING_CQ 4096 /* completions the kernel can post at once */
#define BRAID__URING_NBUF 64 /* provided read buffers per reactor */
#define BRAID__URING_BUFSZ (16u * 1024u) /* the size of a stream chunk */
#define BRAID__URING_BGID 0              /* the stream chunks' group */
/* Datagrams get buffers of their own: a datagram that does not fit is
 * truncated, and UDP payloads go up to 65507 bytes (IPv4) and 65527
 * (IPv6), so 16 KiB chunks would cut datagrams the readiness engine's 64
 * KiB buffer takes whole. */
#define BRAID__URING_DNBUF 8
#define BRAID__URING_DBUFSZ (64u * 1024u)
#define BRAID__URING_DBGID 1

/* The kernel's ring indices, shared with us through mmap. */
typedef _Atomic unsigned braid__aidx;

/* A provided buffer ring: n buffers of size bytes, buffer group bgid. */
typedef struct braid__ubr {
  struct io_uring_buf_ring *br;
  _Atomic uint16_t *tail;
  uint16_t local;
  uint16_t bgid;
  unsigned n;
  size_t size;
  char *bufs;
} braid__ubr;

typedef struct braid__uring {
  braid_reactor_t *r;
  int fd;
  unsigned features;
  /* Submission queue. */
  void *sq_ring;
  size_t sq_ring_sz;
  braid__aidx *sq_head, *sq_tail, *sq_flags;
  unsigned sq_mask, sq_entries, sq_local; /* sq_local: our next tail */
  struct io_uring_sqe *sqes;
  size_t sqes_sz;
  /* Completion queue (in the same mapping: IORING_FEAT_SINGLE_MMAP). */
  braid__aidx *cq_head, *cq_tail;
  unsigned cq_mask;
  struct io_uring_cqe *cqes;
  /* Provided buffer rings for reads with read.base == NULL: stream
   * chunks (READ) and datagrams (RECVFROM). */
  braid__ubr sbr, dbr;
  /* uring.c's: the wakeup, closes waiting for SQEs, message headers,
   * connections taken while no accept waited. */
  int wake_fd;
  braid__sock *close_wait; /* closes that could not get SQEs yet */
  struct braid__umsg *umsg_free;
  struct braid__parked *parked;
  int no_mshot; /* the kernel refused a multishot ACCEPT */
} braid__uring;

_Static_assert(sizeof(braid__aidx) == sizeof(unsigned), "atomic unsigned");

/* Set up u's ring (u->r set, everything else zero but u->fd -1): create
 * it, check the kernel's features and opcodes, map it, register the
 * buffer rings. 0, or BRAID_ENOTSUP / BRAID_E* with a log line saying why
 * (the reactor falls back to epoll). */
int braid__ur_open(braid__uring *u);
/* Close the ring, then unmap everything braid__ur_open mapped. */
void braid__ur_close(braid__uring *u);

/* Room for n SQEs, submitting what is queued if the ring is full: 1 if
 * there is. */
int braid__ur_reserve(braid__uring *u, unsigned n);
/* SQEs that can be queued without a submission. */
unsigned braid__ur_space(braid__uring *u);
/* A zeroed SQE at our tail (call braid__ur_reserve first). */
struct io_uring_sqe *braid__ur_sqe(braid__uring *u);
/* Submit the queued SQEs and wait until a completion is posted or
 * timeout_ns passed (0: do not wait; -1: no limit). 0 or BRAID_E*. */
int braid__ur_submit_wait(braid__uring *u, int64_t timeout_ns);
/* Completions posted and not yet taken. */
unsigned braid__ur_cq_ready(braid__uring *u);
/* Whether the kernel has work for us that the ring descriptor cannot
 * announce: SQEs not handed over yet, task work waiting for an enter
 * (IORING_SQ_TASKRUN), completions not taken. */
int braid__ur_ring_pending(braid__uring *u);
/* Give buffer bid back to its ring. */
void braid__ur_buf_put(braid__ubr *r, unsigned bid);

#endif
