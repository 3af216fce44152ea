/* braid: protocols, factories and transports (Twisted's separation of the
 * logical protocol from the physical transport).
 *
 * A protocol is a table of callbacks plus your own state; it never sees a
 * file descriptor. A transport is what a protocol writes to and closes: a
 * TCP or Unix connection, a TLS session, a pipe (braid_pipe_open, or a
 * child's standard streams from braid_process_spawn: braid/process.h), or
 * the in-memory test transport of braid/testing.h, all behind the same
 * functions below.
 *
 * Lifetime of a connection, as seen by its protocol:
 *   connection_made(t)  once, if the connection was established
 *   data_received(...)  any number of times
 *   eof_received()      at most once, when the peer shut down writing
 *   connection_lost(r)  exactly once, last; r == 0 for a clean close by
 *                       either side, else the BRAID_E* reason
 * For a client connect that fails, connection_lost is called (with the
 * reason) without connection_made. After connection_lost returns, the
 * transport is gone: the protocol must not use it again. The protocol's
 * own memory belongs to whoever made it (a factory's build function, or
 * the caller of braid_connect, braid_endpoint_connect, braid_pipe_open,
 * ...); connection_lost is the place to free it.
 */
#ifndef BRAID_TRANSPORT_H
#define BRAID_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "braid/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct braid_transport braid_transport_t;
typedef struct braid_protocol braid_protocol_t;

/* ------------------------------------------------------------------------
 * Addresses
 * ------------------------------------------------------------------------ */

/* A socket address (IPv4, IPv6 or Unix). Fields are private; a zero-filled
 * address is "unspecified". Big enough for struct sockaddr_storage. */
typedef struct braid_addr {
  union {
    unsigned char bytes[128];
    uint64_t align;
  } sa_;
  uint32_t len_;
} braid_addr_t;

/* Parse a numeric IPv4 or IPv6 address ("127.0.0.1", "::1", "[::1]") and a
 * port. No name lookup. BRAID_EINVAL if `ip` is not numeric. */
int braid_addr_ip(braid_addr_t *out, const char *ip, uint16_t port);

/* A Unix socket path. On Linux a path starting with '@' names the abstract
 * namespace. BRAID_ENAMETOOLONG if it does not fit. */
int braid_addr_unix(braid_addr_t *out, const char *path);

/* "127.0.0.1:8080", "[::1]:8080", "unix:/path", "unix:@name". Returns the
 * length written (truncated to fit `size`, always NUL-terminated) or
 * BRAID_EINVAL. */
int braid_addr_format(const braid_addr_t *a, char *buf, size_t size);

/* The port of an IP address, 0 otherwise. */
uint16_t braid_addr_port(const braid_addr_t *a);

/* AF_INET, AF_INET6, AF_UNIX, or 0 for an unspecified address. */
int braid_addr_family(const braid_addr_t *a);

/* ------------------------------------------------------------------------
 * Protocols and factories
 * ------------------------------------------------------------------------ */

/* Every callback may be NULL (then that event is ignored), though a
 * protocol without data_received and connection_lost is rarely useful. */
typedef struct braid_protocol_ops {
  /* The connection is up; `t` is valid until connection_lost returns. */
  void (*connection_made)(braid_protocol_t *p, braid_transport_t *t);
  /* Bytes arrived. `data` is valid only during the call (zero-copy: it is
   * the transport's read buffer). */
  void (*data_received)(braid_protocol_t *p, const void *data, size_t len);
  /* The peer shut down its writing side. Optional: when NULL, braid closes
   * the connection (after flushing) as Twisted does for protocols that are
   * not half-close aware; when set, the protocol may keep writing and
   * decides when to close. */
  void (*eof_received)(braid_protocol_t *p);
  /* Last call; see the lifetime above. */
  void (*connection_lost)(braid_protocol_t *p, int reason);
  /* Flow control (Twisted's IPushProducer, with the transport as the
   * consumer): the transport's write queue passed its high-water mark, or
   * drained below the low-water mark after that. Optional. */
  void (*pause_writing)(braid_protocol_t *p);
  void (*resume_writing)(braid_protocol_t *p);
} braid_protocol_ops;

/* The struct of type `type` whose member `member` is at `ptr`: from a
 * braid_protocol_t * (or a braid_transport_t *, a braid_timer_t *, ...)
 * embedded in your own struct back to that struct. */
#define BRAID_CONTAINER_OF(ptr, type, member)                                  \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Embed this in your protocol's own struct (BRAID_CONTAINER_OF), or point
 * `user` at it. */
struct braid_protocol {
  const braid_protocol_ops *ops;
  braid_transport_t *transport; /* set by braid before connection_made */
  void *user;
};

/* A factory builds one protocol per accepted connection. Return NULL to
 * refuse the connection (it is closed at once). */
typedef struct braid_factory braid_factory_t;
struct braid_factory {
  braid_protocol_t *(*build)(braid_factory_t *f, const braid_addr_t *peer);
  void *user;
};

/* ------------------------------------------------------------------------
 * Transports
 * ------------------------------------------------------------------------ */

typedef struct braid_iovec {
  const void *base;
  size_t len;
} braid_iovec_t;

/* Called when braid no longer needs memory handed to
 * braid_transport_write_owned (written, or dropped on close). */
typedef void (*braid_release_cb)(void *data, void *arg);

/* Queue bytes for writing. The bytes are copied unless written at once
 * (braid tries the write immediately when nothing is queued, so a short
 * reply usually costs one syscall and no copy). Returns 0, BRAID_ECLOSED
 * after close/abort/shutdown_write, BRAID_ENOMEM. Writes after the
 * connection failed are accepted and dropped until connection_lost runs,
 * as in Twisted. */
int braid_transport_write(braid_transport_t *t, const void *data, size_t len);
int braid_transport_writev(braid_transport_t *t, const braid_iovec_t *iov,
                           size_t n);

/* Zero-copy write: braid keeps a reference to `data` until it is written,
 * then calls release(data, arg). On failure (error return) release has
 * NOT been called and the caller still owns the memory. */
int braid_transport_write_owned(braid_transport_t *t, void *data, size_t len,
                                braid_release_cb release, void *arg);

/* Zero-copy file write: queue `len` bytes of the open regular file `fd`
 * from `offset`, sent by the kernel (Linux sendfile(2)) after whatever is
 * queued before it. The descriptor stays the caller's: braid calls
 * release(NULL, arg) once the bytes are written or dropped on close, and
 * the caller may close it then. The bytes count in write_queued() and in
 * flow control like any other. BRAID_ENOTSUP when this transport or
 * platform cannot do it (TLS, the memory transport, poll without
 * sendfile): then read the file and use the calls above. On an error
 * return, release has NOT been called. */
int braid_transport_sendfile(braid_transport_t *t, int fd, uint64_t offset,
                             size_t len, braid_release_cb release, void *arg);

/* Close after everything queued is written (Twisted's loseConnection).
 * Reading stops at once. connection_lost(0) follows. */
int braid_transport_close(braid_transport_t *t);

/* Drop the connection now, discarding queued output (Twisted's
 * abortConnection). On TCP the peer sees a reset (RST), not an orderly
 * end of input. connection_lost(BRAID_ECONNABORTED) follows. */
int braid_transport_abort(braid_transport_t *t);

/* Shut down the writing side after the queue drains (TCP FIN); keep
 * reading. Further writes return BRAID_ECLOSED. */
int braid_transport_shutdown_write(braid_transport_t *t);

/* Stop / restart delivering data_received. Counted nowhere: pausing twice
 * is the same as once. */
int braid_transport_pause_reading(braid_transport_t *t);
int braid_transport_resume_reading(braid_transport_t *t);

/* Addresses of the two ends. BRAID_ENOTSUP for transports without them. */
int braid_transport_local_addr(braid_transport_t *t, braid_addr_t *out);
int braid_transport_peer_addr(braid_transport_t *t, braid_addr_t *out);

/* Socket options; BRAID_ENOTSUP on transports that are not TCP. */
int braid_transport_set_nodelay(braid_transport_t *t, bool on);
int braid_transport_set_keepalive(braid_transport_t *t, bool on,
                                  unsigned idle_seconds);

/* Flow control marks for the write queue, in bytes. Default 64 KiB high,
 * 16 KiB low. BRAID_EINVAL unless low <= high. */
int braid_transport_set_write_limits(braid_transport_t *t, size_t high,
                                     size_t low);

/* Whether the transport is going away: close or abort was called, or the
 * connection failed (Twisted's `disconnecting`). No more data_received
 * follows, so a protocol parsing a chunk stops at the first true. */
bool braid_transport_closing(const braid_transport_t *t);

/* Bytes queued and not yet written. */
size_t braid_transport_write_queued(const braid_transport_t *t);

braid_reactor_t *braid_transport_reactor(const braid_transport_t *t);

/* Hand the connection to another protocol: every later event (data, EOF,
 * flow control, connection_lost) goes to `p`, and p->transport = t. For
 * protocols that negotiate and then hand over: STARTTLS (braid_tls_start
 * puts the TLS layer there), a SOCKS or HTTP CONNECT client handing the
 * tunnel to the user's protocol. `p` is not sent connection_made (the
 * connection is already up: call it yourself if p expects it), and the
 * old protocol hears nothing more, not even connection_lost: it is the
 * caller's to free. May be called from inside any callback of the old
 * protocol. BRAID_EINVAL for NULL or p->ops NULL, BRAID_ECLOSED once
 * connection_lost was delivered. */
int braid_transport_set_protocol(braid_transport_t *t, braid_protocol_t *p);

/* A named extra of the transport (asyncio's get_extra_info), or NULL when
 * it has none by that name (or for NULL arguments). Stacked transports
 * answer their own names and pass the others down, so a framing layer over
 * TLS still answers the TLS names. Names are "module.key"; the value's type
 * and lifetime are documented by the module that answers it (braid/tls.h:
 * "tls.ssl", "tls.peer_x509", "tls.alpn", ...); values are borrowed, valid
 * at most until connection_lost returns, and never to be freed. */
void *braid_transport_extra(braid_transport_t *t, const char *name);

/* ------------------------------------------------------------------------
 * TCP and Unix stream sockets
 * ------------------------------------------------------------------------ */

typedef struct braid_listener braid_listener_t;

typedef struct braid_listen_options {
  int backlog;        /* 0: 511 */
  bool reuse_port;    /* SO_REUSEPORT (where the OS has it) */
  bool ipv6_only;     /* IPV6_V6ONLY for an IPv6 listener */
  bool no_reuse_addr; /* SO_REUSEADDR is on unless this is set */
} braid_listen_options;

/* Listen on `addr` (IP or Unix) and build a protocol with `f` for each
 * connection. `f` must outlive the listener. opts may be NULL.
 *
 * A Unix path is a socket file that bind creates: if the path exists the
 * call fails with BRAID_EADDRINUSE (a file left by a process that did not
 * close its listener, such as one killed by SIGKILL, must be removed by
 * hand). The listener removes the file it created when it is closed (also
 * by the reactor's destruction), on POSIX systems, if the path still names
 * that same socket (device and inode as after bind): a file another
 * process put there since is left alone, as is an abstract name (Linux
 * "@name", no file). Windows keeps the file for now. */
int braid_listen(braid_reactor_t *r, const braid_addr_t *addr,
                 const braid_listen_options *opts, braid_factory_t *f,
                 braid_listener_t **out);

/* The bound address (with the real port when listening on port 0). */
int braid_listener_addr(const braid_listener_t *l, braid_addr_t *out);

/* Stop listening and free the listener (removing its Unix socket file,
 * see braid_listen). Connections already accepted are not affected. */
int braid_listener_close(braid_listener_t *l);

/* Call cb(arg) once when the listener closes: from braid_listener_close
 * (also when the reactor is destroyed with the listener open), after it
 * stopped accepting, so the listener's factory is never called after cb.
 * A module that made a listener with a factory of its own (a "tls:"
 * endpoint's wrapping factory) frees that factory there. Several may be
 * registered; they run in the order they were added. BRAID_EINVAL for NULL
 * l or cb, BRAID_ECLOSED on a closed listener, BRAID_ENOMEM. */
int braid_listener_on_close(braid_listener_t *l, void (*cb)(void *arg),
                            void *arg);

typedef struct braid_connect_options {
  uint64_t timeout;     /* ns; 0: none. BRAID_ETIMEDOUT when it expires */
  const braid_addr_t *bind; /* local address to bind first, or NULL */
} braid_connect_options;

/* Connect to `addr` (IP or Unix); `p` gets connection_made on success and
 * connection_lost in every case (see the top of this file). Errors that are
 * known at once (bad address, no memory) are returned and no callback
 * runs. opts may be NULL. */
int braid_connect(braid_reactor_t *r, const braid_addr_t *addr,
                  const braid_connect_options *opts, braid_protocol_t *p);

#ifdef __cplusplus
}
#endif
#endif
