#!/bin/sh
# Set up and run braid's whole test suite, once per poller this host builds.
#
#   sh scripts/test.sh            gcc build in build/, every test on every poller
#   sh scripts/test.sh asan       the same under AddressSanitizer + UBSan
#   sh scripts/test.sh clang      built with clang
#   sh scripts/test.sh valgrind   every test under valgrind memcheck
#   sh scripts/test.sh tsan       the thread pool, call-from-thread and
#                                 allocation failure (thread pool) tests
#                                 under ThreadSanitizer (clang)
#   sh scripts/test.sh release    release builds (-O3, NDEBUG) with gcc and
#                                 with clang and a -Os one with gcc, each
#                                 warning-free under -Werror; every test
#                                 on every poller on the gcc -O3 build
#
# Installs what it needs from Debian's archive when it is missing (as root,
# or through sudo). Prints "N passed, N failed" at the end and exits non-zero
# if any test failed.
set -eu
mode=${1:-default}
cd "$(dirname "$0")/.."

need=""
command -v meson >/dev/null 2>&1 || need="$need meson"
command -v ninja >/dev/null 2>&1 || need="$need ninja-build"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
command -v python3 >/dev/null 2>&1 || need="$need python3"
[ -f /usr/include/cmocka.h ] || need="$need libcmocka-dev"
# TLS (optional in the build; without these its tests are skipped)
[ -f /usr/include/openssl/ssl.h ] || need="$need libssl-dev"
command -v openssl >/dev/null 2>&1 || need="$need openssl"
# The real peers of the interop tests (each is skipped, with a message,
# when missing) and GLib (its adapter and tests are built when found):
# installed here so that this one command runs the whole suite.
command -v curl >/dev/null 2>&1 || need="$need curl ca-certificates"
command -v wrk >/dev/null 2>&1 || need="$need wrk"
[ -x /usr/sbin/nginx ] || need="$need nginx-light"
pkg-config --exists glib-2.0 2>/dev/null || need="$need libglib2.0-dev"
case $mode in
  clang|asan|release) command -v clang >/dev/null 2>&1 || need="$need clang" ;;
  tsan)
    command -v clang >/dev/null 2>&1 || need="$need clang"
    # clang's sanitizer runtimes are a package of their own in Debian 12.
    dpkg -s libclang-rt-14-dev >/dev/null 2>&1 || need="$need libclang-rt-14-dev"
    ;;
  valgrind) command -v valgrind >/dev/null 2>&1 || need="$need valgrind" ;;
esac
if [ -n "$need" ]; then
  echo "installing:$need"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  # Installing nginx must not start it as a service on port 80 (the tests
  # start it with their own configuration): a policy-rc.d answering 101
  # tells invoke-rc.d not to, for this install only.
  rcd=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    rcd=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee $rcd >/dev/null
    $sudo chmod +x $rcd
  fi
  $sudo apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends $need || { [ -z "$rcd" ] || $sudo rm -f $rcd; exit 1; }
  [ -z "$rcd" ] || $sudo rm -f $rcd
fi

setup() { # dir, extra meson args...
  dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" -Dtests=enabled "$@"
  fi
  ninja -C "$dir"
}

wrapper=""
# The 1 GiB proxy soak test moves less data where every byte is slow, and
# the reliability soak tests open fewer connections.
case $mode in
  asan|valgrind)
    export BRAID_PROXY_BYTES=${BRAID_PROXY_BYTES:-67108864}
    export BRAID_SOAK_SCALE=${BRAID_SOAK_SCALE:-10}
    ;;
esac
suites=
case $mode in
  default) dir=build; setup build ;;
  clang) dir=build-clang; CC=clang setup build-clang ;;
  asan)
    dir=build-asan
    setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbench=disabled
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    ;;
  valgrind)
    dir=build-valgrind
    setup build-valgrind -Dbench=disabled
    export BRAID_UNDER_VALGRIND=1
    wrapper="valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99 -q"
    ;;
  tsan)
    # Only the tests that use threads: the rest would just run slower.
    dir=build-tsan
    CC=clang setup build-tsan -Db_sanitize=thread -Db_lundef=false \
      -Dbench=disabled -Dprograms=false
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
    suites="--suite thread --suite threadpool --suite deferred --suite oom"
    ;;
  release)
    # Optimisers warn about what debug builds never look at (gcc 12's
    # -Wformat-truncation at -O3, for one), and -Werror is on everywhere:
    # building is the check. NDEBUG is defined (b_ndebug), so a test run
    # also shows that nothing leans on an assert's side effects. The clang
    # build comes last: POSIX leaves open whether a CC= given to a
    # function stays set after it.
    setup build-release -Dbuildtype=release -Db_ndebug=if-release
    setup build-minsize -Dbuildtype=minsize -Db_ndebug=true
    CC=clang setup build-release-clang -Dbuildtype=release -Db_ndebug=if-release
    dir=build-release
    ;;
  *) echo "usage: $0 [default|asan|clang|valgrind|tsan|release]" >&2; exit 2 ;;
esac

status=0
if [ -n "$wrapper" ]; then
  meson test -C "$dir" --verbose --print-errorlogs --timeout-multiplier 10 \
    --wrapper "$wrapper" || status=$?
else
  # $suites is a list of words on purpose.
  # shellcheck disable=SC2086
  meson test -C "$dir" --verbose --print-errorlogs $suites || status=$?
fi

# One closing line that counts every test run, on every poller.
python3 - "$dir/meson-logs" "$mode" <<'PY'
import glob, json, os, sys
# meson names the log after the wrapper (testlog-valgrind.json): take the
# newest one, which is the run that just finished.
log = max(glob.glob(os.path.join(sys.argv[1], "testlog*.json")), key=os.path.getmtime)
ok = bad = skip = 0
for line in open(log):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"): ok += 1
    elif r == "SKIP": skip += 1
    else: bad += 1
print(f"{sys.argv[2]}: {ok} passed, {bad} failed, {skip} skipped")
PY
exit $status
