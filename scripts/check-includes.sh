#!/bin/sh
# Layering check: protocols, adapters, programs and examples use braid's
# public API (include/braid/) only. A file under protocols/, adapters/,
# bin/ or examples/ must not include
#   - a core/ or platform/ header (quoted or angled, also through "../"),
#   - a header of another protocol module (protocols/OTHER/...);
# a protocol module's own private headers (protocols/http/internal.h from
# protocols/http/) are fine. When a module needs something core keeps to
# itself, make it public API (see include/braid/transport_impl.h for how
# transports, schemes and teardown hooks were), rather than reaching in.
#
#   sh scripts/check-includes.sh     prints each violation; exit 1 if any
set -eu
cd "$(dirname "$0")/.."

out=$(mktemp)
trap 'rm -f "$out"' EXIT
files=$(find protocols adapters bin examples -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort)
for f in $files; do
  # The module a protocols/ file belongs to ("http" for protocols/http/x.c).
  own=""
  case $f in
    protocols/*/*) own=$(echo "$f" | cut -d/ -f2) ;;
  esac
  dir=$(dirname "$f")
  # Every #include as "LINE PATH". C allows blanks before and after '#'.
  awk '/^[ \t]*#[ \t]*include[ \t]*["<]/ {
         p = $0
         sub(/^[ \t]*#[ \t]*include[ \t]*["<]/, "", p)
         sub(/[">].*$/, "", p)
         print FNR " " p
       }' "$f" |
    while read -r n path; do
      # A quoted include is looked up next to the file first, then from the
      # top of the tree (-I.) and include/: check what each would name.
      for cand in "$dir/$path" "$path"; do
        norm=$(realpath -m --relative-to=. "$cand")
        if [ "$cand" = "$dir/$path" ] && [ ! -e "$norm" ]; then
          continue
        fi
        bad=""
        case $norm in
          core/* | platform/*) bad="a core/ or platform/ header" ;;
          protocols/*/*)
            mod=$(echo "$norm" | cut -d/ -f2)
            [ "$mod" = "$own" ] || bad="a header of another module (protocols/$mod)"
            ;;
        esac
        if [ -n "$bad" ]; then
          echo "$f:$n: includes \"$path\", $bad: use the public API (include/braid/)"
          break
        fi
      done
    done
done >"$out"
if [ -s "$out" ]; then
  cat "$out" >&2
  echo "check-includes: $(wc -l <"$out" | tr -d ' ') violation(s)" >&2
  exit 1
fi
echo "check-includes: $(echo "$files" | wc -l | tr -d ' ') files under protocols/, adapters/, bin/, examples/ use the public API only"
