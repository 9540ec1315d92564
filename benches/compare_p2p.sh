#!/usr/bin/env bash
# Side-by-side point-to-point benchmarks with one methodology (OSU-style):
#   TRANSPORT=shm (default): Courier (shared memory) vs Open MPI and MPICH, each
#                            with its default single-host path;
#   TRANSPORT=tcp:           Courier over TCP vs Open MPI's TCP BTL.
# Usage: [TRANSPORT=shm|tcp] [ROUNDS=5] [MIN=1] [MAX=4194304] [NP=2] [THREADS=2] [MR_THREADS=1] [ITERS=N] benches/compare_p2p.sh [latency|bw|bibw|mbw_mr|latency_mt ...]
# (ITERS: timed iterations per size for every system, instead of OSU's
#  counts: OSU's 100 windows of a `bw` at 4 KiB last about a millisecond,
#  and such short runs swing 2x between runs of one binary.)
# (NP: ranks of mbw_mr, NP/2 pairs; the table compares its messages per second.
#  THREADS: threads per rank of latency_mt; MR_THREADS: streaming threads per
#  rank of mbw_mr. With more than one thread every system runs unbound
#  (--bind-to none), the peers at MPI_THREAD_MULTIPLE.)
# Every system runs ROUNDS times, interleaved; the table shows medians and the
# ratio Courier/peer (latency: lower is better; bandwidth: higher is better),
# taken per round (runs seconds apart) and then the median over rounds.
# RESULTS (default target/bench-results/p2p-TRANSPORT) receives every raw
# table (SYSTEM.KIND.ROUND), the medians as `courier bench --format json`
# documents (KIND-SYSTEM.json) and their plot (KIND.svg, `courier report`).
set -Eeuo pipefail
# A failed step names itself (set -e alone stops the script silently).
trap 'echo "$0: line $LINENO: \"$BASH_COMMAND\" failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
TRANSPORT=${TRANSPORT:-shm}
ROUNDS=${ROUNDS:-5}
MIN=${MIN:-1}
MAX=${MAX:-$((4 << 20))}
NP=${NP:-2}
[ $# -gt 0 ] && KINDS=("$@") || KINDS=(latency bw)
source benches/peers.sh
out=${RESULTS:-target/bench-results/p2p-$TRANSPORT}
mkdir -p "$out"
cargo build --release -q
# The placement probe run around every run (see benches/results.py).
cc -O2 -o "$out/latency_floor" benches/probes/latency_floor.c
probe() { "$out/latency_floor" 100000 | awk '{print $2}'; }
case " $PEERS_AVAILABLE " in *" ompi "*) mpicc.openmpi -O2 -o "$out/p2p_ompi" benches/peers/osu_p2p.c -lpthread ;; esac
case " $PEERS_AVAILABLE " in *" mpich "*) mpicc.mpich -O2 -o "$out/p2p_mpich" benches/peers/osu_p2p.c -lpthread ;; esac
case "$TRANSPORT" in
  shm) SYSTEMS=(courier $PEERS_AVAILABLE) ;;
  tcp) SYSTEMS=(courier); [[ " $PEERS_AVAILABLE " == *" ompi "* ]] && SYSTEMS+=(ompi) ;;
  *) echo "TRANSPORT must be shm or tcp" >&2; exit 2 ;;
esac
iters=() ompi_x=()
if [ -n "${ITERS:-}" ]; then
  export ITERS # read by the peers
  iters=(--iterations "$ITERS")
  ompi_x=(-x ITERS)
fi
run() { # system kind
  local n=2 bind="--bind-to core" mbind=core
  [ "$2" = mbw_mr ] && n=$NP
  [ "$n" -gt 2 ] && bind="--oversubscribe --bind-to none" mbind=none # more ranks than cores
  local t=1
  [ "$2" = latency_mt ] && t=${THREADS:-2}
  [ "$2" = mbw_mr ] && t=${MR_THREADS:-1}
  export THREADS=$t # read by the peers
  [ "$t" -gt 1 ] && bind="--oversubscribe --bind-to none -x THREADS" mbind=none # threads spread over the cores
  case "$1" in
    courier) ./target/release/courier bench "$2" -n "$n" --transport "$TRANSPORT" --min-size "$MIN" --max-size "$MAX" --threads "$t" "${iters[@]}" ;;
    ompi)
      if [ "$TRANSPORT" = tcp ]; then
        mpirun.openmpi -n "$n" "${ompi_x[@]}" --oversubscribe --mca btl tcp,self --mca btl_tcp_if_include lo "$out/p2p_ompi" "$2" "$MIN" "$MAX"
      else
        mpirun.openmpi -n "$n" "${ompi_x[@]}" $bind "$out/p2p_ompi" "$2" "$MIN" "$MAX"
      fi ;;
    mpich) mpiexec.mpich -n "$n" -bind-to "$mbind" "$out/p2p_mpich" "$2" "$MIN" "$MAX" ;;
  esac
}
for kind in "${KINDS[@]}"; do
  systems=("${SYSTEMS[@]}")
  if [ "$kind" = latency_mt ] && [ "${OMPI_MT:-0}" != 1 ]; then
    # Open MPI 4.1's shared-memory path under MPI_THREAD_MULTIPLE takes
    # milliseconds per message here (1 B: 2.9 ms with 2 threads per rank),
    # so a sweep takes hours: left out unless OMPI_MT=1.
    systems=()
    for s in "${SYSTEMS[@]}"; do [ "$s" = ompi ] && [ "$TRANSPORT" = shm ] || systems+=("$s"); done
  fi
  for r in $(seq "$ROUNDS"); do
    for s in "${systems[@]}"; do
      before=$(probe)
      run "$s" "$kind" | awk '!/^#/ || /^# Node profile:/' > "$out/$s.$kind.$r"
      echo "$before $(probe)" > "$out/$s.$kind.$r.placement"
    done
  done
  NP=$NP python3 - "$out" "$kind" "$ROUNDS" "$TRANSPORT" "${systems[@]}" <<'PY'
import os, sys, statistics
sys.path.insert(0, "benches")
from results import Placements, best_ratio, profiles, write_runs
d, kind, rounds, transport, systems = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
names = {"courier": "Courier", "ompi": "Open MPI", "mpich": "MPICH"}
def load(name):
    runs = []
    for r in range(1, rounds + 1):
        rows = {}
        for line in open(f"{d}/{name}.{kind}.{r}"):
            p = line.split()
            if len(p) in (2, 3):  # mbw_mr: size, MB/s, messages/s
                rows[int(p[0])] = float(p[-1])
        runs.append(rows)
    return runs
raw = {s: load(s) for s in systems}
t = {s: {size: statistics.median(run[size] for run in raw[s]) for size in raw[s][0]} for s in systems}
# The ratio column is the median of per-round ratios: the runs of one round
# are seconds apart, so they usually share the VM's current speed, which
# can change between rounds (see BENCHMARKS.md on bimodal runs).
def ratio(p, size):
    return statistics.median(raw["courier"][r][size] / raw[p][r][size] for r in range(rounds))
unit = {"latency": "us", "latency_mt": "us", "mbw_mr": "messages/s"}.get(kind, "MB/s")
peers = systems[1:]
lower = kind in ("latency", "latency_mt")
# Against the better of `alike` in round r (latency: the faster; else the higher).
def better(r, size, alike):
    pick = min if lower else max
    return raw["courier"][r][size] / pick(raw[p][r][size] for p in alike)
place = Placements(d, kind, rounds, systems)
print(f"## {kind} ({transport}), medians of {rounds} interleaved rounds, {unit}; ratios: median of per-round ratios")
print("| size | " + " | ".join(names[s] for s in systems) + " | " + " | ".join(f"Courier/{names[p]}" for p in peers)
      + (" | Courier/better peer, same placement (rounds) | best/best |" if peers else " |"))
print("|---:" * (len(systems) + len(peers) + 1 + (2 if peers else 0)) + "|")
for size in sorted(t["courier"]):
    vals = " | ".join(f"{t[s][size]:.{3 if t[s][size] < 1 else 2}f}" for s in systems)
    ratios = " | ".join(f"{ratio(p, size):.2f}" for p in peers)
    if peers:
        v, n = place.same(lambda r, alike: better(r, size, alike), peers)
        ratios += " | " + (f"{v:.2f} ({n})" if n else "–")
        ratios += f" | {best_ratio(raw, peers, size, lower):.2f}"
    print(f"| {size} | {vals} | {ratios} |")
line = place.summary(names)
if line:
    print(line)
seen = profiles(f"{d}/courier.{kind}.{r}" for r in range(1, rounds + 1))
if seen:
    print(f"(Courier's runs by the node profile they measured: {seen})")
columns = {"latency": ["latency_us"], "latency_mt": ["latency_us"], "mbw_mr": ["messages_per_s"]}.get(kind, ["bandwidth_MBps"])
ranks = int(os.environ["NP"]) if kind == "mbw_mr" else 2
write_runs(d, kind, {"shm": "shared memory", "tcp": "TCP"}[transport], ranks, systems,
           {s: {size: [v] for size, v in t[s].items()} for s in systems}, columns, rounds)
PY
done
