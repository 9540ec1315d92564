#!/usr/bin/env bash
# Courier vs MPICH (and Open MPI with WITH_OMPI=1) between two simulated
# hosts (network namespaces joined by veth: TCP), OSU methodology, ROUNDS
# interleaved runs, medians and ratios. Uses launcher/tests/testbed/testbed.sh (root).
# Open MPI 4.1's TCP BTL fails between these namespaces here (its ranks
# report a disconnected peer, then spin), so it is off by default; every
# run is bounded by RUN_TIMEOUT seconds.
# Usage: [ROUNDS=3] [MAX=1048576] benches/compare_hosts.sh [latency bw allreduce ...]
set -Eeuo pipefail
# A failed step names itself (set -e alone stops the script silently).
trap 'echo "$0: line $LINENO: \"$BASH_COMMAND\" failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
MAX=${MAX:-$((1 << 20))}
[ $# -gt 0 ] && KINDS=("$@") || KINDS=(latency bw allreduce)
if ! command -v mpicc.openmpi >/dev/null || ! command -v mpicc.mpich >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev mpich >/dev/null
fi
TB=launcher/tests/testbed/testbed.sh
out=$(mktemp -d)
trap '"$TB" down >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
cargo build --release -q
for peer in p2p coll; do
  mpicc.openmpi -O2 -o "$out/${peer}_ompi" "benches/peers/osu_${peer}.c"
  mpicc.mpich -O2 -o "$out/${peer}_mpich" "benches/peers/osu_${peer}.c"
done
"$TB" up 2 >/dev/null
W=/run/courier-testbed/ssh-wrapper
C=$PWD/target/release/courier
NET=10.99.0.0/24
run() { # system kind
  local kind=$2 peer=p2p args
  case "$kind" in latency|bw|bibw) args=(1 "$MAX") ;; *) peer=coll; args=("$MAX" 100 20) ;; esac
  case "$1" in
    courier) "$TB" exec h1 "$C" run --host h1,h2 -n 2 "$C" bench "$kind" --max-size "$MAX" ;;
    ompi) "$TB" exec h1 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        mpirun.openmpi --mca plm_rsh_agent "$W" --mca plm_rsh_no_tree_spawn 1 \
        --mca btl tcp,self --mca btl_tcp_if_include "$NET" --mca oob_tcp_if_include "$NET" \
        --host h1,h2 -n 2 "$out/${peer}_ompi" "$kind" "${args[@]}" ;;
    # Debian's MPICH (ch4:ucx) would find the simulated hosts' shared memory
    # (one kernel): UCX_TLS=tcp,self keeps it on TCP, like Courier.
    mpich) "$TB" exec h1 mpiexec.hydra -launcher ssh -launcher-exec "$W" -hosts h1,h2 -n 2 \
        -genv UCX_TLS tcp,self \
        "$out/${peer}_mpich" "$kind" "${args[@]}" ;;
  esac
}
for kind in "${KINDS[@]}"; do
  for r in $(seq "$ROUNDS"); do
    for sys in courier mpich $([ "${WITH_OMPI:-0}" = 1 ] && echo ompi); do
      timeout "${RUN_TIMEOUT:-120}" bash -c "$(declare -f run); TB=$TB W=$W C=$C NET=$NET MAX=$MAX out=$out; run $sys $kind" \
        2>/dev/null | grep -v '^#' > "$out/$sys.$r" || true
    done
  done
  python3 - "$out" "$ROUNDS" "$kind" <<'PY'
import sys, statistics
d, rounds, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(name):
    runs = []
    for r in range(1, rounds + 1):
        rows = {}
        try:
            lines = open(f"{d}/{name}.{r}").readlines()
        except OSError:
            lines = []
        for line in lines:
            p = line.split()
            if len(p) == 2:
                try: rows[int(p[0])] = float(p[1])
                except ValueError: pass
        if rows: runs.append(rows)
    if not runs: return {}
    return {s: statistics.median(run[s] for run in runs if s in run) for s in runs[0]}
c, o, m = load("courier"), load("ompi"), load("mpich")
unit = "MB/s" if kind in ("bw", "bibw") else "us"
print(f"### {kind} between two simulated hosts (TCP over veth), median of {rounds}, {unit}")
print("| size | Courier | Open MPI | MPICH | Courier/Open MPI | Courier/MPICH |")
print("|---:|---:|---:|---:|---:|---:|")
for s in sorted(c):
    row = [f"{c[s]:.2f}"] + [f"{x[s]:.2f}" if s in x else "-" for x in (o, m)]
    ratios = [f"{c[s]/x[s]:.2f}" if s in x and x[s] else "-" for x in (o, m)]
    print(f"| {s} | " + " | ".join(row + ratios) + " |")
PY
done
