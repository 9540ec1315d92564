#!/usr/bin/env python3
"""Latency compared within one placement of the VM's vCPUs.

This VM switches every few seconds between a placement where its vCPUs
exchange a cache line quickly and one where they do so 2-3x slower, and a
round of `benches/compare_p2p.sh` whose Courier run and peer runs fell in
different placements measures the placements, not the libraries. This
reads the raw tables a `compare_p2p.sh latency` sitting left
(SYSTEM.latency.ROUND), classes every run by the cache-line probes taken
just before and after it (SYSTEM.latency.ROUND.placement; see
`results.Placements`: runs whose placement changed during them are left
out), and prints, per placement, each system's median and Courier / the
better peer. Tables without probes (sittings before session 27) are
classed by their 8-byte latency instead (below THRESHOLD microseconds:
fast) — a rough rule: Courier's 8-byte latency in the slow placement lies
below the peers' in the fast one on some days.

Usage: [ROUNDS=N] benches/modematch.py [RESULTS_DIR] [THRESHOLD_US]
       (default target/bench-results/p2p-shm and 0.32; ROUNDS: only rounds
       1..N, as the sitting ran them, not tables an earlier one left)
"""
import glob
import os
import statistics
import sys

from results import Placements

SYSTEMS = ("courier", "ompi", "mpich")


def read_table(path):
    """{size: value} of one OSU-style text table."""
    table = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit():
                table[int(fields[0])] = float(fields[1])
    return table


def main():
    results = sys.argv[1] if len(sys.argv) > 1 else "target/bench-results/p2p-shm"
    threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 0.32
    rounds = int(os.environ["ROUNDS"]) if os.environ.get("ROUNDS") else None
    runs = {}
    for system in SYSTEMS:
        # (SYSTEM.latency.ROUND only: not the .placement probes beside them)
        paths = sorted(p for p in glob.glob(f"{results}/{system}.latency.*") if p.rsplit(".", 1)[-1].isdigit())
        if rounds is not None:
            paths = [p for p in paths if p.rsplit(".", 1)[-1] in {str(r) for r in range(1, rounds + 1)}]
        runs[system] = [(int(p.rsplit(".", 1)[-1]), read_table(p)) for p in paths]
        runs[system] = [(r, t) for r, t in runs[system] if 8 in t]
    if not runs["courier"]:
        sys.exit(f"no Courier latency tables with an 8-byte row in {results}")
    sizes = sorted(runs["courier"][0][1])
    last = max(r for s in SYSTEMS for r, _ in runs[s])
    probes = Placements(results, "latency", last, SYSTEMS)

    def placement(system, r, table):
        """"fast", "slow" or None (mixed, or no class)."""
        if probes.any:
            c = probes.placement_class(system, r - 1)
            return {"F": "fast", "S": "slow"}.get(c)
        return "fast" if table[8] < threshold else "slow"

    rule = (f"line probes around each run, slow from {probes.threshold:.3f} us"
            if probes.any and probes.threshold else
            "line probes around each run: one placement" if probes.any else
            f"8 B latency, slow from {threshold} us")
    for name in ("fast", "slow"):
        picked = {s: [t for r, t in runs[s] if placement(s, r, t) == name] for s in SYSTEMS}
        counts = ", ".join(f"{s} {len(picked[s])}" for s in SYSTEMS)
        print(f"## {name} placement ({rule}): runs {counts}")
        if not picked["courier"] or not any(picked[s] for s in SYSTEMS[1:]):
            print("(no runs of Courier and a peer in this placement)\n")
            continue
        print("| size | Courier | Open MPI | MPICH | Courier / better peer |")
        print("|---:|---:|---:|---:|---:|")
        for size in sizes:
            med = {
                s: statistics.median(t[size] for t in picked[s] if size in t)
                for s in SYSTEMS
                if any(size in t for t in picked[s])
            }
            if "courier" not in med or len(med) < 2:
                continue
            best = min(v for s, v in med.items() if s != "courier")
            cells = [f"{med[s]:.3f}" if s in med else "-" for s in SYSTEMS]
            print(f"| {size} | {' | '.join(cells)} | {med['courier'] / best:.2f} |")
        print()


if __name__ == "__main__":
    main()
