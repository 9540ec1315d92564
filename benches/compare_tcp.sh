#!/usr/bin/env bash
# Side-by-side point-to-point benchmark over TCP: Courier vs Open MPI's TCP BTL
# (and MPICH, whose ch4:ofi/tcp path on one host also uses sockets).
# Usage: [ROUNDS=3] [MIN=1] [MAX=4194304] benches/compare_tcp.sh [latency|bw|bibw ...]   (default: latency bw)
# Runs each system ROUNDS times (default 3) interleaved, reports the median per
# size and the ratio Courier / peer (latency: lower is better; bandwidth: higher).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
MIN=${MIN:-1}
MAX=${MAX:-$((4 << 20))}
[ $# -gt 0 ] && KINDS=("$@") || KINDS=(latency bw)
if ! command -v mpicc.openmpi >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
fi
out=$(mktemp -d)
cargo build --release -q
mpicc.openmpi -O2 -o "$out/osu_p2p_ompi" benches/peers/osu_p2p.c
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for kind in "${KINDS[@]}"; do
  for r in $(seq "$ROUNDS"); do
    ./target/release/courier bench "$kind" --transport tcp --min-size "$MIN" --max-size "$MAX" | grep -v '^#' > "$out/courier.$kind.$r"
    mpirun.openmpi -n 2 --mca btl tcp,self --mca btl_tcp_if_include lo \
      "$out/osu_p2p_ompi" "$kind" "$MIN" "$MAX" | grep -v '^#' > "$out/ompi.$kind.$r"
  done
  python3 - "$out" "$kind" "$ROUNDS" <<'PY'
import sys, statistics
d, kind, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(name):
    runs = []
    for r in range(1, rounds + 1):
        rows = {}
        for line in open(f"{d}/{name}.{kind}.{r}"):
            p = line.split()
            if len(p) == 2:
                rows[int(p[0])] = float(p[1])
        runs.append(rows)
    return {s: statistics.median(run[s] for run in runs) for s in runs[0]}
c, o = load("courier"), load("ompi")
unit = "us" if kind == "latency" else "MB/s"
print(f"## {kind} over TCP, median of {rounds} interleaved runs ({unit})")
print(f"| size | Courier | Open MPI tcp | Courier/Open MPI |")
print(f"|---:|---:|---:|---:|")
for s in sorted(c):
    print(f"| {s} | {c[s]:.2f} | {o.get(s, float('nan')):.2f} | {c[s] / o[s]:.2f} |")
PY
done
