#!/usr/bin/env bash
# Start-up time side by side: wall time of a whole job that only initializes
# and finalizes, Courier vs Open MPI vs MPICH, at 2/8/32/64 ranks (oversubscribed
# on small machines), median of ROUNDS (default 5) interleaved runs.
# Usage: benches/compare_startup.sh [N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
[ $# -gt 0 ] && SIZES=("$@") || SIZES=(2 8 32 64)
if ! command -v mpicc.openmpi >/dev/null || ! command -v mpicc.mpich >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev mpich >/dev/null
fi
out=$(mktemp -d)
cargo build --release -q
mpicc.openmpi -O2 -o "$out/init_ompi" benches/peers/osu_init.c
mpicc.mpich -O2 -o "$out/init_mpich" benches/peers/osu_init.c
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
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
    o+=("$(wall mpirun.openmpi --oversubscribe -n "$n" "$out/init_ompi")")
    m+=("$(wall mpiexec.mpich -n "$n" "$out/init_mpich")")
  done
  python3 - "$n" "${c[*]}" "${o[*]}" "${m[*]}" <<'PY'
import sys, statistics
n = sys.argv[1]
c, o, m = (statistics.median(map(int, a.split())) for a in sys.argv[2:5])
print(f"| {n} | {c:.0f} | {o:.0f} | {m:.0f} | {c / o:.2f} | {c / m:.2f} |")
PY
done
