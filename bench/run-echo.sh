#!/bin/bash
# Echo benchmark: braid against echo servers written on libuv, libevent and
# libev, same run, interleaved. A benchmark, never a test.
#
#   bash bench/run-echo.sh [RUNS] [SECONDS]      (defaults: 3 runs, 5 s)
#   CALLGRIND=0 / IDLE=0 skip those parts.
#
# Server pinned to CPU 0, load generator (bench/echo_load, plain epoll) to
# CPU 1. Reported per peer, median of RUNS:
#   rt/s        ping-pong round trips per second, 50 connections x 64 bytes
#   cpu_us/rt   server CPU time per round trip: utime+stime of the server
#               process (/proc/PID/stat) over the run / round trips
#   busy_us/rt  the same from CPU 0's busy time in /proc/stat (includes the
#               kernel's softirq work done on that CPU for the server)
#   MB/s        one connection streaming 64 KiB blocks
#   B/idle      server RSS growth per idle connection at 10,000 connections
#   Ir/rt       instructions per round trip under callgrind (1 connection,
#               difference between 30,000 and 10,000 round trips, so start-up
#               cancels out): repeatable on a noisy machine
# On 2 CPUs the load generator often saturates first: compare cpu_us/rt.
set -eu
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SECS=${2:-5}
B=build
[ -f $B/build.ninja ] || meson setup $B >/dev/null
ninja -C $B >/dev/null
OUT=bench/out
mkdir -p $OUT
LOAD=$B/bench/echo_load
ulimit -n 65536 2>/dev/null || ulimit -n 30000 2>/dev/null || true
PIN0="taskset -c 0"; PIN1="taskset -c 1"
command -v taskset >/dev/null || { PIN0=""; PIN1=""; }

peers="braid"
for p in libuv libevent libev; do
  if [ -x $B/bench/echo_$p ]; then peers="$peers $p"; else echo "skipping $p: not built (install lib${p#lib}-dev)"; fi
done

server_cmd() { # peer port
  case $1 in
    braid) echo "$B/bin/braid echo --quiet --listen tcp:port=$2:interface=127.0.0.1" ;;
    *) echo "$B/bench/echo_$1 $2" ;;
  esac
}

port=17500
start_server() { # peer [wrapper...]
  local peer=$1; shift
  port=$((port + 1))
  $PIN0 "$@" $(server_cmd $peer $port) >/dev/null 2>&1 &
  spid=$!
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
    sleep 0.02
  done
  echo "server $peer did not start" >&2; return 1
}
stop_server() { kill $spid 2>/dev/null; wait $spid 2>/dev/null || true; }
proc_cpu() { awk '{print $14 + $15}' /proc/$1/stat; }
cpu0_busy() { awk '/^cpu0 /{print $2+$3+$4+$7+$8}' /proc/stat; }
rss_kb() { awk '/^VmRSS/{print $2}' /proc/$1/status; }
hz=$(getconf CLK_TCK)

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ); runs=$RUNS seconds=$SECS"
echo "peer,run,rt_per_s,cpu_us_per_rt,busy_us_per_rt,mb_per_s" > $OUT/echo.csv
for run in $(seq 1 $RUNS); do
  for peer in $peers; do
    start_server $peer
    c0=$(proc_cpu $spid); b0=$(cpu0_busy)
    line=$($PIN1 $LOAD pingpong $port 50 64 $SECS)
    c1=$(proc_cpu $spid); b1=$(cpu0_busy)
    rt=$(echo "$line" | sed 's/.*roundtrips=\([0-9]*\).*/\1/')
    rps=$(echo "$line" | sed 's/.*rt_per_s=\([0-9]*\).*/\1/')
    cpu=$(awk -v a=$c0 -v b=$c1 -v hz=$hz -v rt=$rt 'BEGIN{printf "%.2f", (b-a)/hz*1e6/rt}')
    busy=$(awk -v a=$b0 -v b=$b1 -v hz=$hz -v rt=$rt 'BEGIN{printf "%.2f", (b-a)/hz*1e6/rt}')
    mbs=$($PIN1 $LOAD stream $port 65536 $((SECS > 3 ? 3 : SECS)) | sed 's/.*mb_per_s=\([0-9.]*\).*/\1/')
    stop_server
    echo "$peer,$run,$rps,$cpu,$busy,$mbs" >> $OUT/echo.csv
    echo "  run $run $peer: $rps rt/s, $cpu us CPU/rt, $busy us busy/rt, $mbs MB/s"
  done
done

: > $OUT/echo_extra.csv
if [ "${IDLE:-1}" = 1 ]; then
  for peer in $peers; do
    start_server $peer
    r0=$(rss_kb $spid)
    fifo=$(mktemp -u); mkfifo $fifo
    $LOAD idle $port 10000 6 > $fifo &
    lpid=$!
    read -r _ < $fifo || true
    sleep 0.5
    r1=$(rss_kb $spid)
    wait $lpid || true; rm -f $fifo
    stop_server
    awk -v p=$peer -v a=$r0 -v b=$r1 'BEGIN{printf "%s,idle_bytes_per_conn,%.0f\n", p, (b-a)*1024/10000}' >> $OUT/echo_extra.csv
  done
fi
if [ "${CALLGRIND:-1}" = 1 ] && command -v valgrind >/dev/null; then
  for peer in $peers; do
    irs=""
    for n in 10000 30000; do
      f=$(mktemp)
      start_server $peer valgrind --tool=callgrind --callgrind-out-file=$f
      $LOAD count $port 1 64 $n >/dev/null
      stop_server
      irs="$irs $(grep -m1 '^summary:' $f | awk '{print $2}')"
      rm -f $f
    done
    echo "$irs" | awk -v p=$peer '{printf "%s,instructions_per_rt,%.0f\n", p, ($2-$1)/20000}' >> $OUT/echo_extra.csv
  done
fi

python3 - $OUT <<'PY'
import csv, statistics, sys, os
out = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(out, "echo.csv"))))
extra = {}
for line in open(os.path.join(out, "echo_extra.csv")):
    p, k, v = line.strip().split(",")
    extra[(p, k)] = float(v)
peers = list(dict.fromkeys(r["peer"] for r in rows))
def med(p, k):
    vals = [float(r[k]) for r in rows if r["peer"] == p]
    return statistics.median(vals), (min(vals), max(vals))
base = {k: med("braid", k)[0] for k in ("rt_per_s", "cpu_us_per_rt", "busy_us_per_rt", "mb_per_s")}
lines = ["| peer | rt/s (min-max) | cpu us/rt | x braid | busy us/rt | MB/s | B/idle conn | Ir/rt | x braid |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
bir = extra.get(("braid", "instructions_per_rt"))
for p in peers:
    rps, (lo, hi) = med(p, "rt_per_s")
    cpu = med(p, "cpu_us_per_rt")[0]
    ir = extra.get((p, "instructions_per_rt"))
    lines.append("| %s | %.0f (%.0f-%.0f) | %.2f | %.2f | %.2f | %.0f | %s | %s | %s |" % (
        p, rps, lo, hi, cpu, cpu / base["cpu_us_per_rt"], med(p, "busy_us_per_rt")[0],
        med(p, "mb_per_s")[0],
        "%.0f" % extra[(p, "idle_bytes_per_conn")] if (p, "idle_bytes_per_conn") in extra else "-",
        "%.0f" % ir if ir else "-", "%.2f" % (ir / bir) if ir and bir else "-"))
table = "\n".join(lines)
print(table)
open(os.path.join(out, "echo.md"), "w").write(table + "\n")
PY
