#!/bin/sh
# Run a test, unless this script itself is running under valgrind (meson
# test --wrapper valgrind runs it as `valgrind sh skip_under_valgrind.sh
# TEST`): then report a skip (exit 77). See tests/meson.build for why the
# io_uring runs are skipped under valgrind.
case "${LD_PRELOAD:-}" in
*vgpreload*)
  echo "skipped: io_uring under valgrind (see tests/meson.build)"
  exit 77
  ;;
esac
exec "$@"
