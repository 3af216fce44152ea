#!/bin/sh
# The repeatable benchmark figures: user-space instructions per operation
# under callgrind (and syscalls per operation under strace), braid against
# the peers, in one run:
#   echo round trip (8 connections with one 64-byte message in flight each,
#   and 1 connection): braid (epoll), libuv, libevent, libev;
#   HTTP hello from memory and a 13-byte static file (8 keep-alive
#   connections): braid web against nginx (one process, sendfile,
#   open_file_cache, access_log off).
# Each figure is the difference of a long and a short run divided by the
# difference in operations, so start-up cancels out; instruction counts do
# not depend on what else the machine is doing, unlike wall-clock figures.
#
#   sh bench/callgrind.sh [--cg-repeat N] [--out DIR]
#
# Writes DIR/results.md (default bench/out), and per-function costs for
# braid to DIR/cg/top.*.txt. Needs valgrind, strace, nginx (nginx-light)
# and the peers' -dev packages (bench/run-all.sh installs them as root).
# A benchmark, never a test: it takes a few minutes.
set -eu
cd "$(dirname "$0")/.."
exec python3 bench/run.py --only callgrind "$@"
