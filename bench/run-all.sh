#!/bin/sh
# One command for every benchmark (see bench/run.py for the method):
#   sh bench/run-all.sh [--runs N] [--seconds S] [--only echo1,http,...] [--callgrind]
# (sh bench/callgrind.sh: only the repeatable instruction counts.)
# Installs the peers it can from Debian's archive when run as root, builds,
# runs, and writes bench/out/results.{md,csv} and bench/out/ratios.svg.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && [ -z "${BRAID_BENCH_NO_INSTALL:-}" ]; then
  need=""
  for p in libuv1-dev libevent-dev libev-dev python3-twisted wrk nginx-light valgrind strace openssl nodejs meson ninja-build gcc pkg-config; do
    dpkg -s $p >/dev/null 2>&1 || need="$need $p"
  done
  if [ -n "$need" ]; then
    [ -f /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need
  fi
fi
exec python3 bench/run.py "$@"
