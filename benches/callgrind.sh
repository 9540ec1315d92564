#!/usr/bin/env bash
# Instructions per small message, counted by callgrind (exact and
# repeatable): runs benches/instructions.rs at two iteration counts and
# divides the difference, so start-up cost cancels out.
# Usage: benches/callgrind.sh [blocking|window|stream|bw|pingpong|pingpong-tcp|allreduce|reduce|barrier ...]
# (bw, pingpong, allreduce, reduce and barrier run a job of two ranks through
#  the launcher, rank 1 under callgrind: for bw the receiving end of osu_bw
#  over the shared-memory ring; for pingpong rank 1's side of osu_latency at
#  8 bytes (pingpong-tcp: over TCP); for the collectives one rank's work per
#  call, its partner, at full speed, always ahead.)
# The shared-memory profile is pinned (PROFILE, default close: what this
# machine's start-up calibration picks): under valgrind the calibration's
# timing is distorted, and a job that measured itself `far` took other
# paths (bw: 816 instructions per message instead of close's 646).
# (In another checkout, e.g. an old revision's worktree, copy
# benches/instructions.rs and this script there and add the [[bench]] entry.)
set -Eeuo pipefail
# A failed step names itself (set -e alone stops the script silently).
trap 'echo "$0: line $LINENO: \"$BASH_COMMAND\" failed (exit $?)" >&2' ERR
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
cargo build --release -q -p courier-launcher
export COURIER_SHM_PROFILE=${PROFILE:-close}
count() { # mode iterations -> total instructions
  local f transport=shm mode=$1
  f=$(mktemp)
  if [[ "$mode" == *-tcp ]]; then
    transport=tcp
    mode=${mode%-tcp}
  fi
  if [[ "$mode" =~ ^(bw|pingpong|allreduce|reduce|barrier)$ ]]; then
    # Only rank 1 under valgrind: the sender runs at full speed, so the
    # receiver rarely waits and its count is the work per message.
    ./target/release/courier run -n 2 --transport "$transport" -- sh -c \
      'if [ "$COURIER_RANK" = 1 ]; then exec valgrind --tool=callgrind --callgrind-out-file="$0" -q "$@"; else exec "$@"; fi' \
      "$f" "$bin" "$mode" "$2" >/dev/null 2>&1
  else
    valgrind --tool=callgrind --callgrind-out-file="$f" -q "$bin" "$1" "$2" >/dev/null 2>&1
  fi
  grep -E '^(summary|totals):' "$f" | head -1 | awk '{print $2}'
  rm -f "$f"
}
for mode in "${MODES[@]}"; do
  a=$(count "$mode" 2000)
  b=$(count "$mode" 4000)
  per=$(((b - a) / 2000))
  case "$mode" in
    window) echo "$mode: $((per / 64)) instructions per message (isend + irecv + share of wait_all), $per per window of 64" ;;
    bw) echo "$mode: $((per / 64)) instructions per message on the receiving rank (irecv + ring + share of wait_all), $per per window of 64" ;;
    allreduce) echo "$mode: $per instructions per 8-byte all-reduce of two ranks, on one" ;;
    reduce) echo "$mode: $per instructions per 8-byte reduce of two ranks, at the root" ;;
    barrier) echo "$mode: $per instructions per barrier of two ranks, on one" ;;
    pingpong | pingpong-tcp) echo "$mode: $per instructions per round trip of 8 bytes on rank 1 (recv + send)" ;;
    stream) echo "$mode: $((per / 64)) instructions per message (send, then recv of an unexpected message)" ;;
    *) echo "$mode: $per instructions per message (send + recv)" ;;
  esac
done
