/* The io_uring rings (see uring.h): raw io_uring_setup / io_uring_enter /
 * io_uring_register syscalls (glibc has no wrappers; no liburing), the
 * mapped submission and completion queues, the opcode probe, provided
 * buffer rings, and the enter that submits and waits.
 *
 * Memory ordering follows io_uring(7): acquire loads of the CQ tail and SQ
 * head (written by the kernel), release stores of the SQ tail and CQ head
 * (read by the kernel), and of the buffer ring's tail. */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "platform/linux/uring.h"

/* ------------------------------------------------------------------------
 * Syscalls: glibc has no wrappers for these.
 * ------------------------------------------------------------------------ */

static int braid__ur_setup(unsigned entries, struct io_uring_params *p) {
  return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int braid__ur_enter(int fd, unsigned to_submit, unsigned min_complete,
                           unsigned flags, const void *arg, size_t argsz) {
  return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags,
                      arg, argsz);
}

static int braid__ur_register(int fd, unsigned opcode, const void *arg,
                              unsigned nr_args) {
  return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
}

/* ------------------------------------------------------------------------
 * The submission queue
 * ------------------------------------------------------------------------ */

/* Hand the queued SQEs to the kernel without waiting. */
static void braid__ur_flush(braid__uring *u) {
  atomic_store_explicit(u->sq_tail, u->sq_local, memory_order_release);
  unsigned pending =
      u->sq_local - atomic_load_explicit(u->sq_head, memory_order_acquire);
  if (pending == 0)
    return;
  int rc;
  do
    rc = braid__ur_enter(u->fd, pending, 0, 0, NULL, 0);
  while (rc < 0 && errno == EINTR);
}

unsigned braid__ur_space(braid__uring *u) {
  unsigned head = atomic_load_explicit(u->sq_head, memory_order_acquire);
  return u->sq_entries - (u->sq_local - head);
}

int braid__ur_reserve(braid__uring *u, unsigned n) {
  if (braid__ur_space(u) >= n)
    return 1;
  braid__ur_flush(u);
  return braid__ur_space(u) >= n;
}

struct io_uring_sqe *braid__ur_sqe(braid__uring *u) {
  struct io_uring_sqe *sqe = &u->sqes[u->sq_local & u->sq_mask];
  memset(sqe, 0, sizeof *sqe);
  u->sq_local++;
  return sqe;
}

/* ------------------------------------------------------------------------
 * Provided buffers
 * ------------------------------------------------------------------------ */

/* Give buffer bid back to the kernel. Only addr, len and bid are written:
 * the ring's tail overlays the resv field of entry 0. */
void braid__ur_buf_put(braid__ubr *r, unsigned bid) {
  struct io_uring_buf *b = &r->br->bufs[r->local & (r->n - 1)];
  b->addr = (uint64_t)(uintptr_t)(r->bufs + (size_t)bid * r->size);
  b->len = (uint32_t)r->size;
  b->bid = (uint16_t)bid;
  r->local++;
  atomic_store_explicit(r->tail, r->local, memory_order_release);
}

/* ------------------------------------------------------------------------
 * Setting up
 * ------------------------------------------------------------------------ */

void braid__ur_close(braid__uring *u) {
  /* The ring first: once it is gone no request can touch the buffers. */
  if (u->fd >= 0)
    close(u->fd);
  braid__ubr *rings[2] = {&u->sbr, &u->dbr};
  for (int i = 0; i < 2; i++) {
    if (rings[i]->bufs != NULL)
      munmap(rings[i]->bufs, rings[i]->n * rings[i]->size);
    if (rings[i]->br != NULL)
      munmap(rings[i]->br, rings[i]->n * sizeof(struct io_uring_buf));
  }
  if (u->sqes != NULL)
    munmap(u->sqes, u->sqes_sz);
  if (u->sq_ring != NULL)
    munmap(u->sq_ring, u->sq_ring_sz);
}

/* Why init failed, for the log: the reactor falls back to epoll. */
static int braid__ur_fail(braid__uring *u, const char *what, int err) {
  braid_reactor_log(u->r, BRAID_LOG_INFO, "uring", "%s: %s", what,
                    err ? strerror(err) : "not supported by this kernel");
  return err ? braid__translate_sys_error(err) : BRAID_ENOTSUP;
}

/* The opcodes braid issues; all exist since Linux 5.6. */
static const uint8_t braid__ur_opcodes[] = {
    IORING_OP_RECV,     IORING_OP_SEND,        IORING_OP_READ,
    IORING_OP_WRITEV,   IORING_OP_SENDMSG,     IORING_OP_RECVMSG,
    IORING_OP_ACCEPT,   IORING_OP_CONNECT,     IORING_OP_CLOSE,
    IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL};

static int braid__ur_probe(braid__uring *u) {
  size_t sz =
      sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
  struct io_uring_probe *p = braid_calloc(1, sz);
  if (p == NULL)
    return BRAID_ENOMEM;
  int rc = 0;
  if (braid__ur_register(u->fd, IORING_REGISTER_PROBE, p, 256) < 0) {
    rc = braid__ur_fail(u, "IORING_REGISTER_PROBE", errno);
  } else {
    for (size_t i = 0; i < sizeof braid__ur_opcodes; i++) {
      unsigned op = braid__ur_opcodes[i];
      if (op > p->last_op || op >= p->ops_len ||
          !(p->ops[op].flags & IO_URING_OP_SUPPORTED)) {
        braid_reactor_log(u->r, BRAID_LOG_INFO, "uring",
                          "opcode %u not supported", op);
        rc = BRAID_ENOTSUP;
        break;
      }
    }
  }
  braid_free(p);
  return rc;
}

static int braid__ur_map(braid__uring *u, const struct io_uring_params *p) {
  size_t sq = p->sq_off.array + p->sq_entries * sizeof(unsigned);
  size_t cq = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
  u->sq_ring_sz = sq > cq ? sq : cq;
  void *ring = mmap(NULL, u->sq_ring_sz, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_POPULATE, u->fd, IORING_OFF_SQ_RING);
  if (ring == MAP_FAILED)
    return braid__ur_fail(u, "mmap(SQ/CQ ring)", errno);
  u->sq_ring = ring;
  u->sqes_sz = p->sq_entries * sizeof(struct io_uring_sqe);
  void *sqes = mmap(NULL, u->sqes_sz, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_POPULATE, u->fd, IORING_OFF_SQES);
  if (sqes == MAP_FAILED)
    return braid__ur_fail(u, "mmap(SQEs)", errno);
  u->sqes = sqes;
  char *b = ring;
  u->sq_head = (braid__aidx *)(void *)(b + p->sq_off.head);
  u->sq_tail = (braid__aidx *)(void *)(b + p->sq_off.tail);
  u->sq_flags = (braid__aidx *)(void *)(b + p->sq_off.flags);
  u->sq_mask = *(unsigned *)(void *)(b + p->sq_off.ring_mask);
  u->sq_entries = *(unsigned *)(void *)(b + p->sq_off.ring_entries);
  u->sq_local = atomic_load_explicit(u->sq_tail, memory_order_relaxed);
  /* The SQ array maps ring slots to SQEs; identity, set once. */
  unsigned *array = (unsigned *)(void *)(b + p->sq_off.array);
  for (unsigned i = 0; i < u->sq_entries; i++)
    array[i] = i;
  u->cq_head = (braid__aidx *)(void *)(b + p->cq_off.head);
  u->cq_tail = (braid__aidx *)(void *)(b + p->cq_off.tail);
  u->cq_mask = *(unsigned *)(void *)(b + p->cq_off.ring_mask);
  u->cqes = (struct io_uring_cqe *)(void *)(b + p->cq_off.cqes);
  return 0;
}

static int braid__ur_ring_init(braid__uring *u, braid__ubr *r, unsigned n,
                               size_t size, uint16_t bgid) {
  r->n = n; /* a power of two */
  r->size = size;
  r->bgid = bgid;
  size_t rsz = n * sizeof(struct io_uring_buf);
  void *br = mmap(NULL, rsz, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (br == MAP_FAILED)
    return BRAID_ENOMEM;
  r->br = br;
  void *bufs = mmap(NULL, n * size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (bufs == MAP_FAILED)
    return BRAID_ENOMEM;
  r->bufs = bufs;
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (uint64_t)(uintptr_t)br;
  reg.ring_entries = n;
  reg.bgid = bgid;
  if (braid__ur_register(u->fd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0)
    return braid__ur_fail(u, "IORING_REGISTER_PBUF_RING (Linux 5.19)", errno);
  r->tail =
      (_Atomic uint16_t *)(void *)((char *)br +
                                   offsetof(struct io_uring_buf_ring, tail));
  r->local = 0;
  for (unsigned i = 0; i < n; i++)
    braid__ur_buf_put(r, i);
  return 0;
}

static int braid__ur_bufs(braid__uring *u) {
  /* The rings must be page-aligned; mmap gives that. The buffers are
   * mapped too, so pages never written stay uncommitted. The kernel takes
   * buffers in ring order, so a busy reactor touches all of them: 64 x 16
   * KiB = 1 MiB resident at most for streams (64 x 64 KiB made a 10 MB
   * echo leave 4 MiB resident, against 64 KiB for the readiness engine's
   * one buffer), and 8 x 64 KiB = 512 KiB for datagrams, only once UDP is
   * used. Idle sockets hold none. */
  int rc = braid__ur_ring_init(u, &u->sbr, BRAID__URING_NBUF,
                               BRAID__URING_BUFSZ, BRAID__URING_BGID);
  if (rc == 0)
    rc = braid__ur_ring_init(u, &u->dbr, BRAID__URING_DNBUF,
                             BRAID__URING_DBUFSZ, BRAID__URING_DBGID);
  return rc;
}

int braid__ur_open(braid__uring *u) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  /* CQSIZE: room for a burst of completions. SUBMIT_ALL (5.18): one bad
   * SQE does not hold back the rest. COOP_TASKRUN + TASKRUN_FLAG (5.19):
   * no interrupts to run completion work while we are busy; the kernel
   * sets IORING_SQ_TASKRUN instead and we enter when we next look. */
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL |
            IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  p.cq_entries = BRAID__URING_CQ;
  u->fd = braid__ur_setup(BRAID__URING_SQ, &p);
  if (u->fd < 0) {
    /* ENOSYS: no io_uring; EPERM: io_uring_disabled or seccomp; EINVAL:
     * a kernel older than 5.19 refusing the flags. */
    int rc = braid__ur_fail(u, "io_uring_setup", errno);
    return rc == BRAID_EINVAL ? BRAID_ENOTSUP : rc;
  }
  u->features = p.features;
  const unsigned need = IORING_FEAT_SINGLE_MMAP | IORING_FEAT_NODROP |
                        IORING_FEAT_SUBMIT_STABLE | IORING_FEAT_FAST_POLL |
                        IORING_FEAT_EXT_ARG;
  if ((p.features & need) != need)
    return braid__ur_fail(u, "features EXT_ARG/FAST_POLL/NODROP", 0);
  int rc;
  if ((rc = braid__ur_map(u, &p)) < 0 || (rc = braid__ur_probe(u)) < 0 ||
      (rc = braid__ur_bufs(u)) < 0)
    return rc;
  return 0;
}

/* ------------------------------------------------------------------------
 * Waiting
 * ------------------------------------------------------------------------ */

int braid__ur_submit_wait(braid__uring *u, int64_t timeout_ns) {
  atomic_store_explicit(u->sq_tail, u->sq_local, memory_order_release);
  unsigned to_submit =
      u->sq_local - atomic_load_explicit(u->sq_head, memory_order_acquire);
  unsigned flags = 0, min_complete = 0;
  struct __kernel_timespec ts;
  struct io_uring_getevents_arg arg;
  const void *argp = NULL;
  size_t argsz = 0;
  if (timeout_ns != 0) {
    flags |= IORING_ENTER_GETEVENTS;
    min_complete = 1;
    if (timeout_ns > 0) {
      ts.tv_sec = timeout_ns / 1000000000;
      ts.tv_nsec = timeout_ns % 1000000000;
      memset(&arg, 0, sizeof arg);
      arg.ts = (uint64_t)(uintptr_t)&ts;
      flags |= IORING_ENTER_EXT_ARG;
      argp = &arg;
      argsz = sizeof arg;
    }
  } else if (atomic_load_explicit(u->sq_flags, memory_order_relaxed) &
             (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) {
    /* Completions waiting as task work or in the overflow list. */
    flags |= IORING_ENTER_GETEVENTS;
  }
  if (to_submit == 0 && flags == 0)
    return 0;
  int rc = braid__ur_enter(u->fd, to_submit, min_complete, flags, argp, argsz);
  if (rc < 0 && errno != ETIME && errno != EINTR && errno != EBUSY &&
      errno != EAGAIN)
    return braid__translate_sys_error(errno);
  return 0;
}

unsigned braid__ur_cq_ready(braid__uring *u) {
  return atomic_load_explicit(u->cq_tail, memory_order_acquire) -
         atomic_load_explicit(u->cq_head, memory_order_relaxed);
}

int braid__ur_ring_pending(braid__uring *u) {
  if (u->sq_local != atomic_load_explicit(u->sq_head, memory_order_acquire))
    return 1;
  if (atomic_load_explicit(u->sq_flags, memory_order_relaxed) &
      IORING_SQ_TASKRUN)
    return 1;
  return braid__ur_cq_ready(u) > 0;
}
