#!/bin/bash
# Cross-build braid for Windows (x86_64, mingw-w64) and run its whole test
# suite under wine, on the IOCP poller. For CI and for anyone on Debian:
#
#   bash scripts/test-windows.sh
#
# Installs the cross compiler, wine, meson and cmake from Debian's archive
# (as root or through sudo), cross-builds cmocka from Debian's own source
# package into a scratch prefix (nothing third-party is committed; /etc/apt
# is not modified), boots a headless wine prefix with a persistent
# wineserver, then runs `meson test` in build-win/. Prints
# "windows: N passed, N failed, N skipped" and exits non-zero on a failure.
#
# Build directory: $BRAID_WIN_BUILD (default build-win/). Scratch space:
# $BRAID_WIN_SCRATCH (default build-win-scratch/ in the
# tree): the cmocka source and prefix, the apt lists, the wine prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scratch=${BRAID_WIN_SCRATCH:-$root/build-win-scratch}
mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd)
start=$(date +%s)

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
need=""
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need="$need gcc-mingw-w64-x86-64-win32"
command -v wine >/dev/null 2>&1 || need="$need wine64 wine"
command -v meson >/dev/null 2>&1 || need="$need meson"
command -v ninja >/dev/null 2>&1 || need="$need ninja-build"
command -v cmake >/dev/null 2>&1 || need="$need cmake"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
command -v python3 >/dev/null 2>&1 || need="$need python3"
command -v dpkg-source >/dev/null 2>&1 || need="$need dpkg-dev"
if [ -n "$need" ]; then
  echo "installing:$need"
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -q --no-install-recommends $need
fi

# --- cmocka for the Windows target, from Debian's source package ----------
prefix=$scratch/cmocka-prefix
if [ ! -f "$prefix/lib/libcmocka.a" ]; then
  echo "=== cross-building cmocka into $prefix"
  apt_dir=$scratch/apt
  rm -rf "$apt_dir"
  mkdir -p "$apt_dir/sources" "$apt_dir/lists/partial"
  # deb-src entries for the archive this machine already uses, in a private
  # configuration: /etc/apt stays as it is.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    sed 's/^Types: deb$/Types: deb-src/' "$f" >"$apt_dir/sources/$(basename "$f")"
  done
  if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb \(.*\)/deb-src \1/p' /etc/apt/sources.list >"$apt_dir/sources/list.list"
  fi
  aptopts=(-o "Dir::Etc::SourceParts=$apt_dir/sources"
           -o "Dir::Etc::SourceList=/dev/null"
           -o "Dir::State::Lists=$apt_dir/lists"
           -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
  apt-get "${aptopts[@]}" update -q >/dev/null
  src=$scratch/cmocka-src
  rm -rf "$src"
  mkdir -p "$src"
  (cd "$src" && apt-get "${aptopts[@]}" source -q cmocka >/dev/null)
  srcdir=$(find "$src" -mindepth 1 -maxdepth 1 -type d -name 'cmocka-*' | head -n1)
  cat >"$scratch/mingw-toolchain.cmake" <<TC
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc)
set(CMAKE_RC_COMPILER x86_64-w64-mingw32-windres)
set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
TC
  cmake -S "$srcdir" -B "$scratch/cmocka-build" -G Ninja \
    -DCMAKE_TOOLCHAIN_FILE="$scratch/mingw-toolchain.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
    -DWITH_STATIC_LIB=ON -DWITH_EXAMPLES=OFF -DUNIT_TESTING=OFF >/dev/null
  ninja -C "$scratch/cmocka-build" install >/dev/null
  # Link cmocka statically so wine never has to find cmocka.dll.
  if [ -f "$prefix/lib/libcmocka-static.a" ]; then
    mv -f "$prefix/lib/libcmocka-static.a" "$prefix/lib/libcmocka.a"
  fi
  rm -f "$prefix/lib/libcmocka.dll.a" "$prefix/bin/"*cmocka*.dll
fi

# --- the cross build -------------------------------------------------------
cat >"$scratch/cmocka.ini" <<INI
[properties]
pkg_config_libdir = ['$prefix/lib/pkgconfig']
INI
dir=${BRAID_WIN_BUILD:-build-win}
if [ ! -f "$dir/build.ninja" ]; then
  meson setup "$dir" --cross-file cross/mingw-w64.ini \
    --cross-file "$scratch/cmocka.ini" -Dtests=enabled -Dbench=disabled
fi
ninja -C "$dir"

# --- wine, headless --------------------------------------------------------
export WINEPREFIX=$scratch/wineprefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
mkdir -p "$WINEPREFIX"
# A persistent wineserver: without it wine's helper processes keep each
# test's stdout open and every test takes seconds or hits its timeout
# (wine 8.0, Debian 12).
# (It fails when one already serves this prefix, which is as good.)
wineserver -p >/dev/null 2>&1 </dev/null || true
trap 'wineserver -k >/dev/null 2>&1 || true' EXIT
wine wineboot </dev/null >/dev/null 2>&1 || true
# A crashing test should fail at once, not sit in wine's debugger until
# meson's timeout.
wine reg add 'HKLM\Software\Microsoft\Windows NT\CurrentVersion\AeDebug' \
  /v Debugger /t REG_SZ /d '' /f </dev/null >/dev/null 2>&1 || true

status=0
meson test -C "$dir" --verbose --print-errorlogs "$@" || status=$?

python3 - "$dir/meson-logs/testlog.json" <<'PY'
import json, re, sys
# Test programs (one per file), then the cmocka test cases inside them.
ok = bad = skip = 0
cases = {"PASSED": 0, "FAILED": 0, "SKIPPED": 0}
for line in open(sys.argv[1]):
    t = json.loads(line)
    r = t.get("result")
    if r in ("OK", "EXPECTEDFAIL"): ok += 1
    elif r == "SKIP": skip += 1
    else: bad += 1
    for m in re.finditer(r"\[\s*(PASSED|FAILED|SKIPPED)\s*\] (\d+) test", (t.get("stdout") or "") + (t.get("stderr") or "")):
        cases[m.group(1)] += int(m.group(2))
print(f"windows: {ok} passed, {bad} failed, {skip} skipped "
      f"(test cases: {cases['PASSED']} passed, {cases['FAILED']} failed, "
      f"{cases['SKIPPED']} skipped)")
PY
echo "windows: took $(( $(date +%s) - start )) s"
exit $status
