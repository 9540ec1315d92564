#!/usr/bin/env bash
# Instructions per small message, counted by callgrind (exact and
# repeatable): runs benches/instructions.rs at two iteration counts and
# divides the difference, so start-up cost cancels out.
# Usage: benches/callgrind.sh [blocking|window ...]
# (In another checkout, e.g. an old revision's worktree, copy
# benches/instructions.rs and this script there and add the [[bench]] entry.)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] && MODES=("$@") || MODES=(blocking window stream)
command -v valgrind >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
bin=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "instructions":
        print(m["executable"])')
count() { # mode iterations -> total instructions
  local f
  f=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$f" -q "$bin" "$1" "$2" >/dev/null 2>&1
  grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}'
  rm -f "$f"
}
for mode in "${MODES[@]}"; do
  a=$(count "$mode" 2000)
  b=$(count "$mode" 4000)
  per=$(((b - a) / 2000))
  case "$mode" in
    window) echo "$mode: $((per / 64)) instructions per message (isend + irecv + share of wait_all), $per per window of 64" ;;
    stream) echo "$mode: $((per / 64)) instructions per message (send, then recv of an unexpected message)" ;;
    *) echo "$mode: $per instructions per message (send + recv)" ;;
  esac
done
