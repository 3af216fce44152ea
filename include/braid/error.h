/* braid: error codes.
 *
 * Every public call that can fail returns 0 (or a non-negative count) on
 * success and one of the negative BRAID_E* codes below on failure. The codes
 * are the same numbers on every operating system; the platform layer maps
 * errno / WSAGetLastError() values onto them.
 */
#ifndef BRAID_ERROR_H
#define BRAID_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, message) */
#define BRAID_ERRNO_MAP(X)                                                     \
  X(EINVAL, -1, "invalid argument")                                            \
  X(ENOMEM, -2, "out of memory")                                               \
  X(EALREADY, -3, "already called")                                            \
  X(ECANCELED, -4, "operation cancelled")                                      \
  X(ENOTRUNNING, -5, "reactor is not running")                                 \
  X(EBUSY, -6, "resource busy or already active")                              \
  X(ENOTSUP, -7, "operation not supported on this platform or build")          \
  X(ETIMEDOUT, -8, "operation timed out")                                      \
  X(ECONNREFUSED, -9, "connection refused")                                    \
  X(ECONNRESET, -10, "connection reset by peer")                               \
  X(ECONNABORTED, -11, "connection aborted")                                   \
  X(EPIPE, -12, "broken pipe")                                                 \
  X(EADDRINUSE, -13, "address already in use")                                 \
  X(EADDRNOTAVAIL, -14, "address not available")                               \
  X(EAFNOSUPPORT, -15, "address family not supported")                         \
  X(EACCES, -16, "permission denied")                                          \
  X(EAGAIN, -17, "resource temporarily unavailable")                           \
  X(EBADF, -18, "bad file descriptor")                                         \
  X(EMFILE, -19, "too many open files")                                        \
  X(ENFILE, -20, "file table overflow")                                        \
  X(ENOENT, -21, "no such file or directory")                                  \
  X(EEXIST, -22, "file already exists")                                        \
  X(EHOSTUNREACH, -23, "host is unreachable")                                  \
  X(ENETUNREACH, -24, "network is unreachable")                                \
  X(ENOTCONN, -25, "socket is not connected")                                  \
  X(EISCONN, -26, "socket is already connected")                               \
  X(EINTR, -27, "interrupted system call")                                     \
  X(EIO, -28, "i/o error")                                                     \
  X(EOF, -29, "end of file")                                                   \
  X(ECLOSED, -30, "handle or transport is closed")                             \
  X(ERANGE, -31, "result out of range")                                        \
  X(EMSGSIZE, -32, "message too long")                                         \
  X(ENOSPC, -33, "no space left on device")                                    \
  X(ENAMETOOLONG, -34, "name too long")                                        \
  X(EPERM, -35, "operation not permitted")                                     \
  X(ENOTSOCK, -36, "socket operation on non-socket")                           \
  X(EPROTO, -37, "protocol error")                                             \
  X(ENOTFOUND, -38, "name or service not known")                               \
  X(ENETDOWN, -39, "network is down")                                          \
  X(ELIMIT, -40, "configured limit exceeded")                                  \
  X(EUNKNOWN, -41, "unknown system error")

enum braid_errno {
#define BRAID__ERR_ENUM(name, val, msg) BRAID_##name = (val),
  BRAID_ERRNO_MAP(BRAID__ERR_ENUM)
#undef BRAID__ERR_ENUM
};

/* A static English message for a BRAID_E* code ("unknown error" for
 * anything else). Never NULL; safe from any thread. */
const char *braid_strerror(int err);

/* The code's name without the prefix, e.g. "ECONNREFUSED"; "UNKNOWN" for
 * codes outside the table. Never NULL; safe from any thread. */
const char *braid_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif
