"""Writes the medians of a compare script's sitting as courier-bench/1 JSON
documents (the format of `courier bench --format json`), one per system,
and draws them with `courier report`. Used by benches/compare_*.sh.

    write_runs(out_dir, kind, transport, ranks, systems, medians, columns)

`medians[system]` maps a message size (None for barrier) to the list of
figures of that size. Files: OUT_DIR/KIND-SYSTEM.json; plot:
OUT_DIR/KIND.svg (skipped, with a note, when there is nothing to plot).

    profiles(paths)

counts Courier's runs by the node profile their tables name.
"""
import json, os, platform, subprocess, sys, time

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
