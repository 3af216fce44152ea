#!/bin/sh
# Set up braid (installing the build tools from Debian's archive if missing),
# build it, and run the braid program with the given arguments:
#   sh scripts/run.sh web                       # serve this folder on tcp:8080
#   sh scripts/run.sh web --path DIR --listen tcp:port=8080:interface=127.0.0.1
#   sh scripts/run.sh echo                      # echo server on tcp:7000
#   sh scripts/run.sh --help                    # the commands and options
set -eu
cd "$(dirname "$0")/.."
need=""
command -v meson >/dev/null 2>&1 || need="$need meson"
command -v ninja >/dev/null 2>&1 || need="$need ninja-build"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
if [ -n "$need" ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need
fi
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
exec ./build/bin/braid "$@"
