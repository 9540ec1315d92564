#!/usr/bin/env bash
# Side-by-side collective latency: Courier vs Open MPI vs MPICH, OSU
# methodology, at NPS rank counts (default "2 4"; 4 oversubscribes a 2-core
# machine), ROUNDS interleaved runs (default 3), medians and ratios.
# Usage: [NPS="2 4"] [ROUNDS=3] [MAX=1048576] [ITERS="1000 100"] [PEERS="ompi mpich"] benches/compare_coll.sh [barrier bcast reduce allreduce allgather alltoall]
# (PEERS=ompi leaves MPICH out, e.g. at 4 ranks on 2 cores, where it spins
# for milliseconds and Open MPI is the better peer.)
# RESULTS (default target/bench-results/coll) receives the raw tables, the
# medians as `courier bench --format json` documents
# (NPr/KIND-SYSTEM.json) and their plots (NPr/KIND.svg, `courier report`).
set -Eeuo pipefail
# A failed step names itself (set -e alone stops the script silently).
trap 'echo "$0: line $LINENO: \"$BASH_COMMAND\" failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
MAX=${MAX:-$((1 << 20))}
NPS=${NPS:-"2 4"}
# Iterations: OSU's defaults (1000 up to 8 KiB, 100 above), which `courier
# bench` also uses unless ITERS is set. Fewer measure mostly the job's
# first milliseconds: at 4 ranks on 2 cores, a 200-iteration barrier read
# 3.4-9.2 us where 20000 iterations read 2.8-4.3.
read -r IT_SMALL IT_LARGE <<< "${ITERS:-1000 100}"
courier_iters=()
[ -n "${ITERS:-}" ] && courier_iters=(--iterations "$IT_SMALL")
[ $# -gt 0 ] && KINDS=("$@") || KINDS=(barrier bcast reduce allreduce)
source benches/peers.sh
PEERS=${PEERS:-$PEERS_AVAILABLE}
out=${RESULTS:-target/bench-results/coll}
mkdir -p "$out"
cargo build --release -q
case " $PEERS " in *" ompi "*) mpicc.openmpi -O2 -o "$out/coll_ompi" benches/peers/osu_coll.c ;; esac
case " $PEERS " in *" mpich "*) mpicc.mpich -O2 -o "$out/coll_mpich" benches/peers/osu_coll.c ;; esac
# The placement probe run around every run (see benches/results.py).
cc -O2 -o "$out/latency_floor" benches/probes/latency_floor.c
probe() { "$out/latency_floor" 100000 | awk '{print $2}'; }
for np in $NPS; do
  mkdir -p "$out/${np}r"
  for kind in "${KINDS[@]}"; do
    for r in $(seq "$ROUNDS"); do
      before=$(probe)
      ./target/release/courier bench "$kind" -n "$np" --max-size "$MAX" "${courier_iters[@]}" | awk '!/^#/ || /^# Node profile:/' > "$out/${np}r/courier.$kind.$r"
      echo "$before $(probe)" > "$out/${np}r/courier.$kind.$r.placement"
      for peer in $PEERS; do
        before=$(probe)
        case "$peer" in
          ompi) mpirun.openmpi --oversubscribe -n "$np" "$out/coll_ompi" "$kind" "$MAX" "$IT_SMALL" "$IT_LARGE" ;;
          mpich) mpiexec.mpich -n "$np" "$out/coll_mpich" "$kind" "$MAX" "$IT_SMALL" "$IT_LARGE" ;;
        esac | grep -v '^#' > "$out/${np}r/$peer.$kind.$r"
        echo "$before $(probe)" > "$out/${np}r/$peer.$kind.$r.placement"
      done
    done
    python3 - "$out/${np}r" "$ROUNDS" "$kind" "$np" $PEERS <<'PY'
import sys, statistics
sys.path.insert(0, "benches")
from results import Placements, best_ratio, profiles, write_runs
d, rounds, kind, np, peers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
names = {"ompi": "Open MPI", "mpich": "MPICH"}
def load(name):
    runs = []
    for r in range(1, rounds + 1):
        rows = {}
        for line in open(f"{d}/{name}.{kind}.{r}"):
            p = line.split()
            if len(p) == 1: rows[0] = float(p[0])
            elif len(p) == 2: rows[int(p[0])] = float(p[1])
        runs.append(rows)
    return runs
raw = {s: load(s) for s in ["courier"] + peers}
med = lambda runs, s: statistics.median(run[s] for run in runs)
# Ratios per round (runs seconds apart, same machine mode), then the median
# over rounds; "best" is against the faster peer of each round.
ratio = lambda p, s: statistics.median(raw["courier"][r][s] / raw[p][r][s] for r in range(rounds))
best = lambda s: statistics.median(raw["courier"][r][s] / min(raw[p][r][s] for p in peers) for r in range(rounds)) if peers else float("nan")
print(f"### {kind}, {np} ranks, medians of {rounds} interleaved rounds, us; ratios: median of per-round ratios")
place = Placements(d, kind, rounds, ["courier"] + peers)
print("| size | Courier | " + " | ".join(names[p] for p in peers) + " | " + " | ".join(f"Courier/{names[p]}" for p in peers) + " | Courier/better peer | Courier/better peer, same placement (rounds) | best/best |")
print("|---:|" + "---:|" * (2 * len(peers) + 4))
for s in sorted(raw["courier"][0]):
    if all(s in raw[p][r] for p in peers for r in range(rounds)) and all(s in raw["courier"][r] for r in range(rounds)):
        num = lambda x: f"{x:.3f}" if x < 1 else f"{x:.2f}"  # sub-microsecond figures need a third decimal
        cells = [num(med(raw["courier"], s))] + [num(med(raw[p], s)) for p in peers]
        cells += [f"{ratio(p, s):.2f}" for p in peers] + [f"{best(s):.2f}"]
        v, n = place.same(lambda r, alike: raw["courier"][r][s] / min(raw[p][r][s] for p in alike), peers)
        cells += [f"{v:.2f} ({n})" if n else "–"]
        cells += [f"{best_ratio(raw, peers, s, True):.2f}" if peers else "–"]
        print(f"| {s} | " + " | ".join(cells) + " |")
line = place.summary({"courier": "Courier", **names})
if line:
    print(line)
seen = profiles(f"{d}/courier.{kind}.{r}" for r in range(1, rounds + 1))
if seen:
    print(f"(Courier's runs by the node profile they measured: {seen})")
systems = ["courier"] + peers
sizes = [s for s in sorted(raw["courier"][0]) if all(s in raw[p][r] for p in systems for r in range(rounds))]
write_runs(d, kind, "shared memory", np, systems,
           {p: {(None if kind == "barrier" else s): [med(raw[p], s)] for s in sizes} for p in systems},
           ["avg_latency_us"], rounds)
PY
  done
done
