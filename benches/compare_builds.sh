#!/usr/bin/env bash
# Courier against an earlier Courier: the same `courier bench` runs from this
# checkout and from git revision OLD, interleaved, in one sitting.
# Usage: [ROUNDS=5] [NP=2] [TRANSPORT=auto|shm|tcp] [MIN=1] [MAX=4194304] [ENV_NEW="K=V ..."]
#        benches/compare_builds.sh OLD [latency|bw|bibw|allreduce|barrier|...]
# Prints, per size, the median of each build and the median over rounds of
# the per-round ratio new/old (latency: lower is better; bw/bibw: higher is
# better). ENV_NEW sets variables for the new build's runs only (e.g.
# ENV_NEW="COURIER_CHECK=1" with OLD=HEAD measures what a knob costs).
# The old build lives in $COMPARE_DIR/<rev> (default /tmp/courier-compare; a
# git worktree outside this workspace, built once).
set -Eeuo pipefail
# A failed step names itself (set -e alone stops the script silently).
trap 'echo "$0: line $LINENO: \"$BASH_COMMAND\" failed (exit $?)" >&2' ERR
cd "$(dirname "$0")/.."
OLD=${1:?usage: compare_builds.sh OLD-REV [kinds...]}
shift
[ $# -gt 0 ] && KINDS=("$@") || KINDS=(latency)
ROUNDS=${ROUNDS:-5}
NP=${NP:-2}
TRANSPORT=${TRANSPORT:-auto}
MIN=${MIN:-1}
MAX=${MAX:-$((4 << 20))}
rev=$(git rev-parse --short "$OLD")
dir=${COMPARE_DIR:-/tmp/courier-compare}/$rev
if [ ! -x "$dir/target/release/courier" ]; then
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  git worktree add -f --detach "$dir" "$rev" >/dev/null
  (cd "$dir" && cargo build --release -q)
fi
cargo build --release -q
new=./target/release/courier
old=$dir/target/release/courier
out=$(mktemp -d)
args() {
  case "$1" in
    latency | bw | bibw) echo "--transport $TRANSPORT --min-size $MIN --max-size $MAX" ;;
    *) echo "-n $NP --max-size $MAX" ;;
  esac
}
for kind in "${KINDS[@]}"; do
  for r in $(seq "$ROUNDS"); do
    # shellcheck disable=SC2046
    "$old" bench "$kind" $(args "$kind") | grep -v '^#' >"$out/old.$kind.$r"
    # shellcheck disable=SC2046
    env ${ENV_NEW:-} "$new" bench "$kind" $(args "$kind") | grep -v '^#' >"$out/new.$kind.$r"
  done
  python3 - "$out" "$kind" "$ROUNDS" "$rev" <<'PY'
import sys, statistics
d, kind, rounds, rev = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def load(name, r):
    rows = {}
    for line in open(f"{d}/{name}.{kind}.{r}"):
        p = line.split()
        try:
            if len(p) >= 2:
                rows[int(p[0])] = float(p[1])
            elif len(p) == 1:  # barrier: one figure, no size
                rows[0] = float(p[0])
        except ValueError:
            pass
    return rows
old = [load("old", r) for r in range(1, rounds + 1)]
new = [load("new", r) for r in range(1, rounds + 1)]
unit = "MB/s" if kind in ("bw", "bibw") else "us"
print(f"# {kind}: new vs {rev}, {rounds} interleaved rounds; ratio = median of per-round new/old")
print(f"{'size':>10} {'old ' + unit:>12} {'new ' + unit:>12} {'new/old':>8}")
for size in sorted(old[0]):
    o = [x[size] for x in old if size in x]
    n = [x[size] for x in new if size in x]
    ratios = [b / a for a, b in zip(o, n) if a > 0]
    if not ratios:
        continue
    print(f"{size:>10} {statistics.median(o):>12.2f} {statistics.median(n):>12.2f} {statistics.median(ratios):>8.3f}")
PY
done
rm -rf "$out"
