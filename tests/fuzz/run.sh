#!/bin/sh
# Build the fuzz targets (HTTP parser, basic framing parsers, endpoint
# strings, the line receiver and a chat protocol over the memory transport) with clang in build-fuzz and run each
# for SECONDS seconds, starting from the seed corpus in corpus/<target>.
# New inputs go to build-fuzz/corpus/<target>; crashes to build-fuzz/crashes.
# Exits non-zero if a target crashes or libFuzzer is not available.
set -eu

secs=${1:-}
case "$secs" in
'' | *[!0-9]*)
  echo "usage: $0 SECONDS" >&2
  exit 2
  ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build-fuzz"

if ! command -v clang >/dev/null 2>&1; then
  echo "clang is not installed; the fuzz targets need clang and libFuzzer" >&2
  exit 3
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
  'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
  'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
  >"$probe/p.c"
if ! clang -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" >/dev/null 2>&1; then
  echo "libFuzzer is not available to clang (install libclang-rt-dev or" \
    "compiler-rt matching $(clang --version | head -n 1))" >&2
  exit 3
fi

if [ ! -f "$build/build.ninja" ]; then
  rm -rf "$build" # a setup that failed half-way
  CC=clang meson setup "$build" "$root" -Dfuzz=true -Dtests=disabled \
    -Dbench=disabled -Dprograms=false -Dbuildtype=debugoptimized
fi
targets="http_request http_response http_chunked basic endpoint line_receiver chat"
# Only the fuzz targets are built: the rest of the tree is not needed.
ninja -C "$build" $(for t in $targets; do printf 'tests/fuzz/fuzz_%s ' "$t"; done)

status=0
mkdir -p "$build/crashes"
for t in $targets; do
  seeds=${t#http_} # the HTTP seeds predate the prefix
  work="$build/corpus/$seeds"
  mkdir -p "$work"
  echo "=== fuzz_$t for ${secs}s"
  if ! "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" \
    -print_final_stats=1 -max_len=4096 -timeout=10 \
    -artifact_prefix="$build/crashes/$t-" \
    "$work" "$here/corpus/$seeds" 2>"$build/fuzz_$t.log"; then
    echo "fuzz_$t FAILED: see $build/fuzz_$t.log and $build/crashes" >&2
    status=1
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^#[0-9]+.*DONE' \
    "$build/fuzz_$t.log" || true
  tail -n 5 "$build/fuzz_$t.log" | grep -E 'ERROR|invariant' || true
done
exit $status
