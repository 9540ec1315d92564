#!/usr/bin/env bash
# Resident memory of an idle job: `scripts/startup_memory.sh N [ARGS...]`
# starts `courier run -n N --oversubscribe ARGS... target/release/examples/idle`,
# waits until every rank has passed a barrier and sleeps, then sums the
# ranks' memory from /proc/PID/smaps_rollup: Rss (counts shared pages once
# per rank that maps them), Pss (shared pages split among their users: the
# job's real footprint) and the launcher's Rss. Build first:
# `cargo build --release --examples`.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: $0 N [courier run options]}
shift
bin=target/release/examples/idle
fifo=$(mktemp -u)
mkfifo "$fifo"
target/release/courier run -n "$n" --oversubscribe "$@" "$bin" 4 >"$fifo" &
job=$!
read -r first <"$fifo" || true
[ "$first" = idle ] || { echo "job did not start: $first" >&2; exit 1; }
sleep 1
python3 - "$job" "$n" <<'PY'
import os, sys
launcher, n = int(sys.argv[1]), int(sys.argv[2])
def rollup(pid):
    f = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        p = line.split()
        if len(p) >= 3 and p[2] == "kB":
            f[p[0].rstrip(":")] = int(p[1])
    return f
ranks = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        if open(f"/proc/{pid}/comm").read().strip() == "idle" and \
           int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == launcher:
            ranks.append(rollup(pid))
    except OSError:
        pass
if len(ranks) != n:
    sys.exit(f"found {len(ranks)} ranks of {n}")
rss = sum(r["Rss"] for r in ranks)
pss = sum(r["Pss"] for r in ranks)
shm = sum(r.get("Pss_Shmem", 0) for r in ranks)
anon = sum(r.get("Pss_Anon", 0) for r in ranks)
l = rollup(launcher)
print(f"ranks: {n}  job Pss: {pss/1024:.1f} MiB ({pss/n:.0f} KiB per rank: "
      f"anon {anon/n:.0f}, shmem {shm/n:.0f})  sum of Rss: {rss/1024:.1f} MiB  "
      f"launcher Rss: {l['Rss']/1024:.1f} MiB")
PY
wait "$job"
rm -f "$fifo"
