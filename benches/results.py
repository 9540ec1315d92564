"""Writes the medians of a compare script's sitting as courier-bench/1 JSON
documents (the format of `courier bench --format json`), one per system,
and draws them with `courier report`. Used by benches/compare_*.sh.

    write_runs(out_dir, kind, transport, ranks, systems, medians, columns)

`medians[system]` maps a message size (None for barrier) to the list of
figures of that size. Files: OUT_DIR/KIND-SYSTEM.json; plot:
OUT_DIR/KIND.svg (skipped, with a note, when there is nothing to plot).

    profiles(paths)

counts Courier's runs by the node profile their tables name.

    Placements(d, kind, rounds, systems)

classes every run of a sitting by the VM's placement around it (the
cache-line probe run just before and just after it: see `placement_class`),
and gives per-round ratios to the better peer over the rounds whose runs
share Courier's placement.

    best_ratio(raw, peers, size, lower)

Courier's best run of the sitting ÷ the better peer's best.
"""
import json, os, platform, statistics, subprocess, sys, time

NAMES = {"courier": "Courier", "ompi": "Open MPI", "mpich": "MPICH"}


def machine():
    cpu, cpus = "", 0
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("processor"):
                cpus += 1
    except OSError:
        pass
    return {"host": platform.node(), "kernel": platform.release(), "cpu": cpu, "cpus": cpus}


def write_runs(out_dir, kind, transport, ranks, systems, medians, columns, rounds, title=None):
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for s in systems:
        rows = [{"size": size, "values": vals} for size, vals in
                sorted(medians[s].items(), key=lambda kv: -1 if kv[0] is None else kv[0])]
        run = {
            "schema": "courier-bench/1",
            "library": NAMES.get(s, s),
            "benchmark": kind,
            "title": title or f"{kind}, {ranks} ranks ({transport}), medians of {rounds} interleaved rounds",
            "transport": transport,
            "ranks": int(ranks),
            "threads": None,
            "iterations": None,
            "settings": {k: v for k, v in os.environ.items() if k.startswith("COURIER_")},
            "machine": machine(),
            "unix_time": int(time.time()),
            "columns": columns,
            "rows": rows,
        }
        path = os.path.join(out_dir, f"{kind}-{s}.json")
        with open(path, "w") as f:
            json.dump(run, f, indent=1)
        paths.append(path)
    svg = os.path.join(out_dir, f"{kind}.svg")
    if all(size is None for s in systems for size in medians[s]):
        print(f"(no plot for {kind}: it has no message sizes)", file=sys.stderr)
        return
    r = subprocess.run(["./target/release/courier", "report", *paths, "-o", svg],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"(no plot for {kind}: {r.stderr.strip()})", file=sys.stderr)
    else:
        print(f"(plot: {svg})", file=sys.stderr)


def profiles(paths):
    """Courier's runs among the raw tables `paths` by the node profile each
    measured (its `# Node profile:` line), as "far 5, remote 2"; empty when
    no table names one (TCP runs, tables from before it was printed)."""
    seen = {}
    for path in paths:
        for line in open(path):
            if line.startswith("# Node profile:"):
                name = line.split()[3]
                seen[name] = seen.get(name, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))


# The probes of a sitting split into two placements at their widest gap (in
# ratio between neighbours, sorted) when that gap is at least this wide;
# otherwise every run is "fast" (one placement). A run is "fast" when both
# probes around it lie below the split, "slow" when both lie above it,
# "mixed" otherwise. The VM's placements differ 2-6x in a line's one-way
# time (about 0.05 against 0.1-0.3 us here); within one the probe spreads
# by 10-40%.
PLACEMENT_GAP = 1.5


def placement_split(probes):
    """The threshold between the two placements among `probes` (the
    geometric middle of their widest gap), or None: one placement."""
    xs = sorted(x for x in probes if x > 0)
    if len(xs) < 2:
        return None
    gap, at = max((xs[i + 1] / xs[i], i) for i in range(len(xs) - 1))
    if gap < PLACEMENT_GAP:
        return None
    return (xs[at] * xs[at + 1]) ** 0.5


class Placements:
    """The placement probes of a sitting: file D/SYSTEM.KIND.ROUND.placement
    holds the one-way time of a cache line (benches/probes/latency_floor.c,
    microseconds) measured just before and just after that run. Missing
    files (an older sitting) leave every run unclassed."""

    def __init__(self, d, kind, rounds, systems):
        self.probes = {}
        for s in systems:
            for r in range(rounds):
                try:
                    with open(f"{d}/{s}.{kind}.{r + 1}.placement") as f:
                        self.probes[(s, r)] = [float(x) for x in f.read().split()]
                except (OSError, ValueError):
                    pass
        every = [x for v in self.probes.values() for x in v]
        self.any = bool(every)
        self.threshold = placement_split(every)
        self.systems, self.rounds = systems, rounds

    def placement_class(self, s, r):
        """"F" (fast), "S" (slow), "M" (mixed) or "?" (no probe)."""
        v = self.probes.get((s, r))
        if not v:
            return "?"
        if self.threshold is None or max(v) < self.threshold:
            return "F"
        if min(v) >= self.threshold:
            return "S"
        return "M"

    def summary(self, names):
        """One line: each system's class per round, and the probes' range."""
        if not self.any:
            return None
        every = [x for v in self.probes.values() for x in v]
        runs = ", ".join(f"{names.get(s, s)} " + "".join(self.placement_class(s, r) for r in range(self.rounds))
                         for s in self.systems)
        split = f"slow from {self.threshold:.3f}" if self.threshold else "one placement"
        return (f"(placement around each run, per round, F fast / S slow / M mixed: {runs}; "
                f"line probes {min(every):.3f}-{max(every):.3f} us, {split})")

    def same(self, ratio_of_round, peers):
        """Median over rounds of `ratio_of_round(r, peers_alike)` where
        `peers_alike` are the peers whose run of round r fell in the same
        placement as Courier's (neither mixed); rounds with none are left
        out. Returns (median, rounds used), or (None, 0)."""
        vals = []
        for r in range(self.rounds):
            mine = self.placement_class("courier", r)
            if mine not in ("F", "S"):
                continue
            alike = [p for p in peers if self.placement_class(p, r) == mine]
            if alike:
                vals.append(ratio_of_round(r, alike))
        if not vals:
            return None, 0
        return statistics.median(vals), len(vals)


def best_ratio(raw, peers, size, lower):
    """Courier's best run of the sitting ÷ the better peer's best, at
    `size` (`raw[system]` is the list of each round's {size: figure};
    `lower`: lower figures are better, as for times). On a VM whose
    placement can change within a run, the best of several runs is the
    one least touched by the slow placement."""
    pick = min if lower else max
    best = lambda s: pick(run[size] for run in raw[s])
    return best("courier") / pick(best(p) for p in peers)
