#!/usr/bin/env bash
# Floors in the same minutes as the peers: the probes under
# benches/probes/ (the data movement of a pattern with no protocol at all)
# interleaved, round by round, with `courier bench` and the peers'
# OSU-style programs, for the patterns where Courier is still short of a
# target or close to it:
#   latency 1 B – 8 KiB      latency_floor.c (1–8 B), medium_latency_floor.c (4, 8 KiB;
#                            the faster of its two layouts in each round)
#   bw 1 B – 8 KiB           msgrate_floor.c (1, 8, 32 B; 4 and 8 KiB: the
#                            two copies of a copy-in/copy-out stream)
#   bibw 64 KiB – 4 MiB      bibw_floor.c (both ranks pull a window at once)
#   all-gather, 2 ranks      exchange_floor.c (64 KiB – 1 MiB blocks: each
#                            rank pulls the block the other has just copied)
#   all-to-all, 2 and 4      alltoall_floor.c, without and with a barrier
#   ranks                    per iteration (2 ranks 256 KiB – 1 MiB, 4 ranks
#                            64 KiB – 1 MiB blocks: each rank pulls the block
#                            meant for it, which its owner never touches;
#                            and `shared`: the send buffers in one mapping,
#                            one memcpy per block, the least any library
#                            could move)
#   TCP latency 1–64 B,      tcp_latency_floor.c (8 B, 1 and 2 MiB: the same
#   1–2 MiB                  ping-pong over a bare socket; Open MPI's TCP BTL;
#                            2 MiB is the smallest size sent by rendezvous)
# Each round starts with an 8-byte latency probe of Courier, printed per
# round: the VM's placement (vCPUs sharing one core's caches or not)
# moves every library's figures, and the floors with them.
# Usage: [ROUNDS=5] benches/floors.sh       (2-4 minutes on 2 cores once built)
# Prints markdown tables: medians over rounds, and medians of per-round
# ratios to the better peer of the round. Raw runs: target/bench-results/floors/.
set -Eeuo pipefail
# A failed step names itself (set -e alone stops the script silently).
trap 'echo "$0: line $LINENO: \"$BASH_COMMAND\" failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
source benches/peers.sh
out=target/bench-results/floors
rm -rf "$out"
mkdir -p "$out/bin"
cargo build --release -q
for p in latency_floor medium_latency_floor msgrate_floor bibw_floor exchange_floor alltoall_floor tcp_latency_floor; do
  cc -O2 -o "$out/bin/$p" "benches/probes/$p.c"
done
case " $PEERS_AVAILABLE " in *" ompi "*)
  mpicc.openmpi -O2 -o "$out/bin/p2p_ompi" benches/peers/osu_p2p.c -lpthread 2>/dev/null
  mpicc.openmpi -O2 -o "$out/bin/coll_ompi" benches/peers/osu_coll.c ;;
esac
case " $PEERS_AVAILABLE " in *" mpich "*)
  mpicc.mpich -O2 -o "$out/bin/p2p_mpich" benches/peers/osu_p2p.c -lpthread 2>/dev/null
  mpicc.mpich -O2 -o "$out/bin/coll_mpich" benches/peers/osu_coll.c ;;
esac
courier=./target/release/courier
bin=$out/bin
# peer SYSTEM NP KIND ARGS...: one of the peers' programs, output as is.
peer() {
  local sys=$1 np=$2 kind=$3
  shift 3
  case "$sys" in
    ompi)
      if [ "$np" -gt 2 ]; then mpirun.openmpi --oversubscribe -n "$np" "$bin/$kind" "$@"
      else mpirun.openmpi -n "$np" --bind-to core "$bin/$kind" "$@"; fi ;;
    mpich) mpiexec.mpich -n "$np" -bind-to core "$bin/$kind" "$@" ;;
  esac 2>/dev/null | grep -v '^#'
}
for r in $(seq "$ROUNDS"); do
  d=$out/$r
  mkdir -p "$d"
  $courier bench latency --min-size 8 --max-size 8 | grep -v '^#' | awk '{print $2}' > "$d/placement"
  # latency
  "$bin/latency_floor" | awk '{print 8, $2}' > "$d/floor.latency"
  for s in 4096 8192; do
    a=$("$bin/medium_latency_floor" $s | awk '{print $(NF-3)}')
    b=$("$bin/medium_latency_floor" $s $s 200000 ring | awk '{print $(NF-3)}')
    awk -v s=$s -v a="$a" -v b="$b" 'BEGIN {print s, (a < b ? a : b)}'
  done >> "$d/floor.latency"
  $courier bench latency --min-size 1 --max-size 8192 | grep -v '^#' > "$d/courier.latency"
  for p in $PEERS_AVAILABLE; do peer "$p" 2 "p2p_$p" latency 1 8192 > "$d/$p.latency"; done
  # bw (the floor prints MB/s, then messages per second)
  for s in 1 8 32 4096 8192; do "$bin/msgrate_floor" $s | awk '{print $1, $2}'; done > "$d/floor.bw"
  $courier bench bw --min-size 1 --max-size 8192 | grep -v '^#' > "$d/courier.bw"
  for p in $PEERS_AVAILABLE; do peer "$p" 2 "p2p_$p" bw 1 8192 > "$d/$p.bw"; done
  # bibw, large messages (the floor prints "size S: aggregate X MB/s")
  for s in 65536 262144 1048576 4194304; do "$bin/bibw_floor" $s | awk '{print $2+0, $4}'; done > "$d/floor.bibw"
  $courier bench bibw --min-size 65536 | grep -v '^#' > "$d/courier.bibw"
  for p in $PEERS_AVAILABLE; do peer "$p" 2 "p2p_$p" bibw 65536 4194304 > "$d/$p.bibw"; done
  # all-gather, 2 ranks, 64 KiB – 1 MiB blocks
  "$bin/exchange_floor" 0.3 | awk '$1 >= 65536' > "$d/floor.allgather2"
  $courier bench allgather -n 2 --min-size 65536 | grep -v '^#' > "$d/courier.allgather2"
  for p in $PEERS_AVAILABLE; do peer "$p" 2 "coll_$p" allgather 1048576 | awk '$1 >= 65536' > "$d/$p.allgather2"; done
  # all-to-all, 2 ranks, 256 KiB – 1 MiB blocks
  # (no barrier column: the probe's barrier yields the core, which two
  # ranks on two cores need not do, and it then takes 1.7x as long)
  "$bin/alltoall_floor" 2 0.3 | awk '$1 >= 262144' > "$d/floor.alltoall2"
  "$bin/alltoall_floor" 2 0.3 sync shared | awk '$1 >= 262144' > "$d/floor_shared.alltoall2"
  $courier bench alltoall -n 2 --min-size 262144 | grep -v '^#' > "$d/courier.alltoall2"
  for p in $PEERS_AVAILABLE; do peer "$p" 2 "coll_$p" alltoall 1048576 | awk '$1 >= 262144' > "$d/$p.alltoall2"; done
  # all-to-all, 4 ranks on 2 cores (Open MPI only: MPICH spins for
  # milliseconds per call there)
  "$bin/alltoall_floor" 4 > "$d/floor.alltoall4"
  "$bin/alltoall_floor" 4 1 sync > "$d/floor_sync.alltoall4"
  "$bin/alltoall_floor" 4 1 sync shared > "$d/floor_shared.alltoall4"
  $courier bench alltoall -n 4 --min-size 65536 | grep -v '^#' > "$d/courier.alltoall4"
  case " $PEERS_AVAILABLE " in *" ompi "*)
    peer ompi 4 coll_ompi alltoall 1048576 | awk '$1 >= 65536' > "$d/ompi.alltoall4" ;;
  esac
  # TCP latency, small messages and 1–2 MiB (Open MPI's TCP BTL over loopback)
  { "$bin/tcp_latency_floor" | awk '{print $1, $2}'
    "$bin/tcp_latency_floor" 1000 1048576 | awk '{print $1, $2}'
    "$bin/tcp_latency_floor" 500 2097152 | awk '{print $1, $2}'; } > "$d/floor.tcp"
  { $courier bench latency --transport tcp --min-size 1 --max-size 64
    $courier bench latency --transport tcp --min-size 1048576 --max-size 2097152; } | grep -v '^#' > "$d/courier.tcp"
  case " $PEERS_AVAILABLE " in *" ompi "*)
    for range in "1 64" "1048576 2097152"; do
      # shellcheck disable=SC2086 # two arguments
      mpirun.openmpi -n 2 --oversubscribe --mca btl tcp,self --mca btl_tcp_if_include lo \
        "$bin/p2p_ompi" latency $range 2>/dev/null | grep -v '^#'
    done > "$d/ompi.tcp" ;;
  esac
done
python3 - "$out" "$ROUNDS" $PEERS_AVAILABLE <<'PY'
import os, statistics, sys
out, rounds, peers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
names = {"ompi": "Open MPI", "mpich": "MPICH"}
def table(r, name):
    path = f"{out}/{r}/{name}"
    rows = {}
    if os.path.exists(path):
        for line in open(path):
            p = line.split()
            if len(p) >= 2:
                rows[int(p[0])] = float(p[1])
    return rows
R = range(1, rounds + 1)
print(f"Placement probe per round (Courier, 8 B latency, µs): "
      + ", ".join(open(f"{out}/{r}/placement").read().strip() for r in R))
def show(title, kind, unit, lower, floors, sizes, peers_here):
    if not peers_here:
        return
    runs = {s: [table(r, f"{s}.{kind}") for r in R] for s in ["courier"] + floors + peers_here}
    print(f"\n### {title}, medians of {rounds} rounds ({unit}); ratios: medians of per-round ratios to the better peer")
    cols = floors + ["courier"] + peers_here
    label = {"floor": "floor", "floor_sync": "floor, barrier per iteration",
             "floor_shared": "floor, one copy from a shared mapping, barrier", "courier": "Courier", **names}
    print("| size | " + " | ".join(label[c] for c in cols) + " | " + " | ".join(f"{label[c]} ÷ better peer" for c in floors + ["courier"]) + " |")
    print("|---:|" + "---:|" * (len(cols) + len(floors) + 1))
    pick = min if lower else max
    for s in sizes:
        if not all(s in runs[c][i] for c in ["courier"] + peers_here for i in range(rounds)):
            continue
        best = [pick(runs[p][i][s] for p in peers_here) for i in range(rounds)]
        cells = []
        for c in cols:
            v = [runs[c][i][s] for i in range(rounds) if s in runs[c][i]]
            cells.append(f"{statistics.median(v):.3g}" if len(v) == rounds else "–")
        for c in floors + ["courier"]:
            ok = all(s in runs[c][i] for i in range(rounds))
            cells.append(f"{statistics.median(runs[c][i][s] / best[i] for i in range(rounds)):.2f}" if ok else "–")
        print(f"| {s} | " + " | ".join(cells) + " |")
show("latency", "latency", "µs", True, ["floor"], [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192], peers)
show("bw", "bw", "MB/s", False, ["floor"], [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192], peers)
show("bibw", "bibw", "MB/s", False, ["floor"], [1 << k for k in range(16, 23, 2)], peers)
show("all-gather, 2 ranks", "allgather2", "µs", True, ["floor"], [1 << k for k in range(16, 21)], peers)
show("all-to-all, 2 ranks", "alltoall2", "µs", True, ["floor", "floor_shared"], [1 << k for k in range(18, 21)], peers)
show("all-to-all, 4 ranks on 2 cores", "alltoall4", "µs", True, ["floor", "floor_sync", "floor_shared"], [1 << k for k in range(16, 21)], [p for p in peers if p == "ompi"])
show("latency over TCP (loopback)", "tcp", "µs", True, ["floor"], [1, 2, 4, 8, 16, 32, 64, 1 << 20, 2 << 20], [p for p in peers if p == "ompi"])
PY
