#!/bin/sh
# Run the timer benchmark: braid and every peer that was built, both
# variants, ROUNDS times each interleaved (braid, libuv, libevent, libev,
# braid, ...), then print a Markdown table of medians with the ratio to
# braid (peer / braid; above 1 means braid is faster or smaller).
#
# Usage: bench/run-timers.sh [N]
# Environment: BUILD (build directory, default "build"), ROUNDS (default 3).
# Pinned to CPU 1 with taskset when it is available and CPU 1 exists.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-build}
rounds=${ROUNDS:-3}
n=${1:-1000000}
case $build in /*) ;; *) build=$here/$build ;; esac

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$here" >/dev/null
fi
ninja -C "$build" bench/bench_timers >/dev/null
progs="braid"
for p in libuv libevent libev; do
  # Build the peer if meson configured it; skip it quietly otherwise.
  if ninja -C "$build" -t targets all 2>/dev/null |
      grep -q "^bench/bench_timers_$p:"; then
    ninja -C "$build" "bench/bench_timers_$p" >/dev/null
    progs="$progs $p"
  else
    echo "skipping $p: not built (library not found at configure time)" >&2
  fi
done

pin=""
if command -v taskset >/dev/null 2>&1 && taskset -c 1 true 2>/dev/null; then
  pin="taskset -c 1"
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
for variant in nocancel cancel; do
  r=1
  while [ "$r" -le "$rounds" ]; do
    for p in $progs; do
      exe=$build/bench/bench_timers
      [ "$p" = braid ] || exe=${exe}_$p
      line=$($pin "$exe" "$variant" "$n") || {
        echo "$p $variant failed: $line" >&2
        exit 1
      }
      echo "$line" | tee -a "$out" >&2
    done
    r=$((r + 1))
  done
done

# Medians per (name, variant), then ratios to braid.
awk -v progs="$progs" '
function median(s,   a, k, i, j, t) {
  k = split(s, a, " ")
  for (i = 2; i <= k; i++) {          # insertion sort, k is tiny
    t = a[i] + 0
    for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
    a[j + 1] = t
  }
  return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
{
  delete f
  for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
  key = f["name"] SUBSEP f["variant"]
  ins[key] = ins[key] " " f["insert_s"]
  tot[key] = tot[key] " " f["total_s"]
  cpu[key] = cpu[key] " " f["cpu_s"]
  rss[key] = rss[key] " " f["peak_rss_kb"]
  bpt[key] = bpt[key] " " f["bytes_per_timer"]
  fired[key] = f["fired"]; nn = f["n"]
}
END {
  np = split(progs, P, " ")
  printf "N = %d timers, timeouts 0-100 ms; medians of the runs; ratio = peer / braid\n\n", nn
  print "| variant | library | insert s | total s | cpu s | total / braid | cpu / braid | insert / braid | bytes/timer | peak RSS KiB | fired |"
  print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  nv = split("nocancel cancel", V, " ")
  for (v = 1; v <= nv; v++) {
    b = "braid" SUBSEP V[v]
    bi = median(ins[b]); bt = median(tot[b]); bc = median(cpu[b])
    for (p = 1; p <= np; p++) {
      key = P[p] SUBSEP V[v]
      if (!(key in tot)) continue
      mi = median(ins[key]); mt = median(tot[key]); mc = median(cpu[key])
      printf "| %s | %s | %.3f | %.3f | %.3f | %.2f | %.2f | %.2f | %.1f | %d | %d |\n",
        V[v], P[p], mi, mt, mc, mt / bt, mc / bc, mi / bi, median(bpt[key]),
        median(rss[key]), fired[key]
    }
  }
}' "$out"
