#!/usr/bin/env bash
# Regenerates every plot under docs/plots/ and the headline table
# (docs/plots/headline.md, the top of BENCHMARKS.md) and the full tables
# (docs/plots/tables/) from fresh runs:
# Courier against Open MPI and MPICH (installed from apt when missing; a
# peer that cannot be installed is skipped, with a note), ROUNDS (default 5)
# interleaved rounds, ratios as medians of per-round ratios.
# Usage: [ROUNDS=5] benches/report.sh        (about 4 minutes on 2 cores once built)
# Raw tables, JSON medians and plots stay in target/bench-results/.
set -Eeuo pipefail
# A failed step names itself (set -e alone stops the script silently).
trap 'echo "$0: line $LINENO: \"$BASH_COMMAND\" failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
export ROUNDS=${ROUNDS:-5}
res=target/bench-results
rm -rf "$res"
mkdir -p "$res" docs/plots
cargo build --release -q
benches/compare_p2p.sh latency bw bibw mbw_mr | tee "$res/p2p.md"
COLL=(barrier bcast reduce allreduce allgather alltoall)
NPS=2 benches/compare_coll.sh "${COLL[@]}" | tee "$res/coll.md"
# At 4 ranks on 2 cores MPICH spins for milliseconds per call (a sweep
# would take an hour): Open MPI is the peer there.
p4=""
command -v mpirun.openmpi >/dev/null && p4=ompi
NPS=4 PEERS="$p4" benches/compare_coll.sh "${COLL[@]}" | tee -a "$res/coll.md"
benches/compare_startup.sh 2 32 64 | tee "$res/startup.md"
for f in "$res"/p2p-shm/*.svg; do cp "$f" "docs/plots/p2p-$(basename "$f")"; done
for np in 2 4; do
  for f in "$res/coll/${np}r"/*.svg; do cp "$f" "docs/plots/coll-${np}ranks-$(basename "$f")"; done
done
python3 benches/headline.py "$res" > docs/plots/headline.md
# The latency runs compared within one placement of the VM's cores (a
# round whose runs fell in different placements measures those).
python3 benches/modematch.py "$res/p2p-shm" > "$res/latency-placements.md"
mkdir -p docs/plots/tables
cp "$res"/p2p.md "$res"/coll.md "$res"/startup.md "$res"/latency-placements.md docs/plots/tables/
echo "plots: docs/plots/*.svg; headline table: docs/plots/headline.md" >&2
