#!/bin/sh
# Run a test on the io_uring poller: uring_run.sh PROBE TEST.
#
# Reports a skip (exit 77) instead when this script itself runs under
# valgrind (meson test --wrapper valgrind runs it as `valgrind sh
# uring_run.sh ...`, and valgrind's LD_PRELOAD shows; see tests/meson.build
# for why), or when PROBE finds that this host refuses io_uring (kernel
# without it or older than 5.19, /proc/sys/kernel/io_uring_disabled,
# seccomp as in Docker's default profile): braid then falls back to epoll,
# which the epoll runs already cover, and tests that check the poller in
# use would fail.
case "${LD_PRELOAD:-}" in
*vgpreload*)
  echo "skipped: io_uring under valgrind (see tests/meson.build)"
  exit 77
  ;;
esac
if ! "$1"; then
  echo "skipped: this host refuses io_uring"
  exit 77
fi
shift
exec "$@"
