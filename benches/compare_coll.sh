#!/usr/bin/env bash
# Side-by-side collective latency: Courier vs Open MPI vs MPICH, OSU
# methodology, at NPS rank counts (default "2 4"; 4 oversubscribes a 2-core
# machine), ROUNDS interleaved runs (default 3), medians and ratios.
# Usage: [NPS="2 4"] [ROUNDS=3] [MAX=1048576] [ITERS="200 20"] benches/compare_coll.sh [barrier bcast reduce allreduce allgather alltoall]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
MAX=${MAX:-$((1 << 20))}
NPS=${NPS:-"2 4"}
read -r IT_SMALL IT_LARGE <<< "${ITERS:-200 20}"
[ $# -gt 0 ] && KINDS=("$@") || KINDS=(barrier bcast reduce allreduce)
if ! command -v mpicc.openmpi >/dev/null || ! command -v mpicc.mpich >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev mpich >/dev/null
fi
out=$(mktemp -d)
cargo build --release -q
mpicc.openmpi -O2 -o "$out/coll_ompi" benches/peers/osu_coll.c
mpicc.mpich -O2 -o "$out/coll_mpich" benches/peers/osu_coll.c
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for np in $NPS; do
  for kind in "${KINDS[@]}"; do
    for r in $(seq "$ROUNDS"); do
      ./target/release/courier bench "$kind" -n "$np" --max-size "$MAX" --iterations "$IT_SMALL" | grep -v '^#' > "$out/courier.$r"
      mpirun.openmpi --oversubscribe -n "$np" "$out/coll_ompi" "$kind" "$MAX" "$IT_SMALL" "$IT_LARGE" | grep -v '^#' > "$out/ompi.$r"
      mpiexec.mpich -n "$np" "$out/coll_mpich" "$kind" "$MAX" "$IT_SMALL" "$IT_LARGE" | grep -v '^#' > "$out/mpich.$r"
    done
    python3 - "$out" "$ROUNDS" "$kind" "$np" <<'PY'
import sys, statistics
d, rounds, kind, np = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(name):
    runs = []
    for r in range(1, rounds + 1):
        rows = {}
        for line in open(f"{d}/{name}.{r}"):
            p = line.split()
            if len(p) == 1: rows[0] = float(p[0])
            elif len(p) == 2: rows[int(p[0])] = float(p[1])
        runs.append(rows)
    return {s: statistics.median(run[s] for run in runs if s in run) for s in runs[0]}
c, o, m = load("courier"), load("ompi"), load("mpich")
print(f"### {kind}, {np} ranks, median of {rounds}, us")
print("| size | Courier | Open MPI | MPICH | Courier/Open MPI | Courier/MPICH |")
print("|---:|---:|---:|---:|---:|---:|")
for s in sorted(c):
    if s in o and s in m:
        print(f"| {s} | {c[s]:.2f} | {o[s]:.2f} | {m[s]:.2f} | {c[s]/o[s]:.2f} | {c[s]/m[s]:.2f} |")
PY
  done
done
