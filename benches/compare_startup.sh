#!/usr/bin/env bash
# Start-up time side by side: wall time of a whole job that only initializes
# and finalizes, Courier vs Open MPI vs MPICH, at 2/8/32/64 ranks (oversubscribed
# on small machines), median of ROUNDS (default 5) interleaved runs.
# Usage: [RESULTS=DIR] benches/compare_startup.sh [N ...]
# RESULTS (default target/bench-results/startup) receives startup.json: the
# medians by rank count and system.
set -Eeuo pipefail
# A failed step names itself (set -e alone stops the script silently).
trap 'echo "$0: line $LINENO: \"$BASH_COMMAND\" failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
[ $# -gt 0 ] && SIZES=("$@") || SIZES=(2 8 32 64)
source benches/peers.sh
out=${RESULTS:-target/bench-results/startup}
mkdir -p "$out"
cargo build --release -q
case " $PEERS_AVAILABLE " in *" ompi "*) mpicc.openmpi -O2 -o "$out/init_ompi" benches/peers/osu_init.c ;; esac
case " $PEERS_AVAILABLE " in *" mpich "*) mpicc.mpich -O2 -o "$out/init_mpich" benches/peers/osu_init.c ;; esac
wall() { # prints wall milliseconds of "$@"
  local t0 t1
  t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000000 ))
}
echo "| ranks | Courier (ms) | Open MPI (ms) | MPICH (ms) | Courier/Open MPI | Courier/MPICH |"
echo "|---:|---:|---:|---:|---:|---:|"
for n in "${SIZES[@]}"; do
  c=(); o=(); m=()
  for _ in $(seq "$ROUNDS"); do
    c+=("$(wall ./target/release/courier bench startup -n "$n" --iterations 1)")
    if [ -x "$out/init_ompi" ]; then o+=("$(wall mpirun.openmpi --oversubscribe -n "$n" "$out/init_ompi")"); else o+=(0); fi
    if [ -x "$out/init_mpich" ]; then m+=("$(wall mpiexec.mpich -n "$n" "$out/init_mpich")"); else m+=(0); fi
  done
  python3 - "$n" "${c[*]}" "${o[*]}" "${m[*]}" "$out/startup.json" <<'PY'
import json, os, sys, statistics
n = sys.argv[1]
c, o, m = (statistics.median(map(int, a.split())) for a in sys.argv[2:5])
r = lambda a, b: f"{a / b:.2f}" if b else "-"
print(f"| {n} | {c:.0f} | {o or '-'} | {m or '-'} | {r(c, o)} | {r(c, m)} |")
path = sys.argv[5]
doc = json.load(open(path)) if os.path.exists(path) else {"ranks": {}}
doc["ranks"][n] = {"Courier": c, "Open MPI": o or None, "MPICH": m or None}
json.dump(doc, open(path, "w"), indent=1)
PY
done
