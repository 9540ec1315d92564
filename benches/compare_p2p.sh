#!/usr/bin/env bash
# Side-by-side point-to-point benchmarks with one methodology (OSU-style):
#   TRANSPORT=shm (default): Courier (shared memory) vs Open MPI and MPICH, each
#                            with its default single-host path;
#   TRANSPORT=tcp:           Courier over TCP vs Open MPI's TCP BTL.
# Usage: [TRANSPORT=shm|tcp] [ROUNDS=5] [MIN=1] [MAX=4194304] [NP=2] [THREADS=2] [MR_THREADS=1] benches/compare_p2p.sh [latency|bw|bibw|mbw_mr|latency_mt ...]
# (NP: ranks of mbw_mr, NP/2 pairs; the table compares its messages per second.
#  THREADS: threads per rank of latency_mt; MR_THREADS: streaming threads per
#  rank of mbw_mr. With more than one thread every system runs unbound
#  (--bind-to none), the peers at MPI_THREAD_MULTIPLE.)
# Every system runs ROUNDS times, interleaved; the table shows medians and the
# ratio Courier/peer (latency: lower is better; bandwidth: higher is better),
# taken per round (runs seconds apart) and then the median over rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
TRANSPORT=${TRANSPORT:-shm}
ROUNDS=${ROUNDS:-5}
MIN=${MIN:-1}
MAX=${MAX:-$((4 << 20))}
NP=${NP:-2}
[ $# -gt 0 ] && KINDS=("$@") || KINDS=(latency bw)
if ! command -v mpicc.openmpi >/dev/null || ! command -v mpicc.mpich >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev mpich >/dev/null
fi
out=$(mktemp -d)
cargo build --release -q
mpicc.openmpi -O2 -o "$out/p2p_ompi" benches/peers/osu_p2p.c -lpthread
mpicc.mpich -O2 -o "$out/p2p_mpich" benches/peers/osu_p2p.c -lpthread
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
case "$TRANSPORT" in
  shm) SYSTEMS=(courier ompi mpich) ;;
  tcp) SYSTEMS=(courier ompi) ;;
  *) echo "TRANSPORT must be shm or tcp" >&2; exit 2 ;;
esac
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
    courier) ./target/release/courier bench "$2" -n "$n" --transport "$TRANSPORT" --min-size "$MIN" --max-size "$MAX" --threads "$t" ;;
    ompi)
      if [ "$TRANSPORT" = tcp ]; then
        mpirun.openmpi -n "$n" --oversubscribe --mca btl tcp,self --mca btl_tcp_if_include lo "$out/p2p_ompi" "$2" "$MIN" "$MAX"
      else
        mpirun.openmpi -n "$n" $bind "$out/p2p_ompi" "$2" "$MIN" "$MAX"
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
    systems=(courier mpich)
    [ "$TRANSPORT" = tcp ] && systems=(courier ompi)
  fi
  for r in $(seq "$ROUNDS"); do
    for s in "${systems[@]}"; do
      run "$s" "$kind" | grep -v '^#' > "$out/$s.$kind.$r"
    done
  done
  python3 - "$out" "$kind" "$ROUNDS" "$TRANSPORT" "${systems[@]}" <<'PY'
import sys, statistics
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
print(f"## {kind} ({transport}), medians of {rounds} interleaved rounds, {unit}; ratios: median of per-round ratios")
print("| size | " + " | ".join(names[s] for s in systems) + " | " + " | ".join(f"Courier/{names[p]}" for p in peers) + " |")
print("|---:" * (len(systems) + len(peers) + 1) + "|")
for size in sorted(t["courier"]):
    vals = " | ".join(f"{t[s][size]:.2f}" for s in systems)
    ratios = " | ".join(f"{ratio(p, size):.2f}" for p in peers)
    print(f"| {size} | {vals} | {ratios} |")
PY
done
