"""The headline table of BENCHMARKS.md from a sitting's results
(benches/report.sh): Courier, Open MPI and MPICH at a few sizes that matter,
with ratios and the command behind each row. Usage: headline.py RESULTS_DIR"""
import json, os, sys

res = sys.argv[1]
SYSTEMS = [("courier", "Courier"), ("ompi", "Open MPI"), ("mpich", "MPICH")]


def fmt_ratio(r):
    return f"{r:.2f}" if r >= 0.01 else f"{r:.4f}"


def figure(path, size):
    try:
        run = json.load(open(path))
    except OSError:
        return None
    for row in run["rows"]:
        if row["size"] == size:
            return row["values"][0]
    return None


def per_round(md, heading, size):
    """The medians of per-round ratios (Courier ÷ each peer) that the
    sitting's markdown table `md` gives for `size` under the heading that
    starts with `heading` ({} when absent). Figures of one round share the
    VM's placement; medians taken apart need not."""
    try:
        lines = open(md).read().splitlines()
    except OSError:
        return {}
    at = next((i for i, l in enumerate(lines) if l.lstrip("#").strip().startswith(heading)), None)
    if at is None:
        return {}
    cols = [c.strip() for c in lines[at + 1].strip().strip("|").split("|")]
    for l in lines[at + 3:]:
        if not l.startswith("|"):
            break
        cells = [c.strip() for c in l.strip().strip("|").split("|")]
        if cells[0] == str(0 if size is None else size):
            out = {}
            for key, name in (("ompi", "Courier/Open MPI"), ("mpich", "Courier/MPICH")):
                if name in cols:
                    try:
                        out[key] = float(cells[cols.index(name)])
                    except ValueError:
                        pass
            return out
    return {}


ROWS = [
    # (what, better, directory, benchmark, size, unit, command)
    ("latency, 8 B", "lower", "p2p-shm", "latency", 8, "µs", "benches/compare_p2p.sh latency"),
    ("latency, 1 MiB", "lower", "p2p-shm", "latency", 1 << 20, "µs", "benches/compare_p2p.sh latency"),
    ("bandwidth, 8 B (message rate)", "higher", "p2p-shm", "bw", 8, "MB/s", "benches/compare_p2p.sh bw"),
    ("bandwidth, 4 MiB", "higher", "p2p-shm", "bw", 4 << 20, "MB/s", "benches/compare_p2p.sh bw"),
    ("bidirectional bandwidth, 4 MiB", "higher", "p2p-shm", "bibw", 4 << 20, "MB/s", "benches/compare_p2p.sh bibw"),
    ("all-reduce, 8 B, 2 ranks", "lower", "coll/2r", "allreduce", 8, "µs", "NPS=2 benches/compare_coll.sh allreduce"),
    ("all-reduce, 1 MiB, 2 ranks", "lower", "coll/2r", "allreduce", 1 << 20, "µs", "NPS=2 benches/compare_coll.sh allreduce"),
    ("all-reduce, 8 B, 4 ranks on 2 cores", "lower", "coll/4r", "allreduce", 8, "µs", "NPS=4 benches/compare_coll.sh allreduce"),
    ("barrier, 2 ranks", "lower", "coll/2r", "barrier", None, "µs", "NPS=2 benches/compare_coll.sh barrier"),
    ("barrier, 4 ranks on 2 cores", "lower", "coll/4r", "barrier", None, "µs", "NPS=4 benches/compare_coll.sh barrier"),
]

print("| | Courier | Open MPI | MPICH | Courier ÷ Open MPI | Courier ÷ MPICH | better is | command |")
print("|---|---:|---:|---:|---:|---:|---|---|")
for what, better, d, bench, size, unit, cmd in ROWS:
    v = {s: figure(os.path.join(res, d, f"{bench}-{s}.json"), size) for s, _ in SYSTEMS}
    if v["courier"] is None:
        continue
    if d.startswith("p2p"):
        rounds = per_round(os.path.join(res, "p2p.md"), f"{bench} (", size)
    else:
        rounds = per_round(os.path.join(res, "coll.md"), f"{bench}, {d[-2]} ranks,", size)
    cell = lambda x: "–" if x is None else f"{x:.3f} {unit}" if x < 1 else f"{x:.2f} {unit}" if x < 1000 else f"{x:,.0f} {unit}"
    ratio = lambda p: "–" if v[p] is None else fmt_ratio(rounds.get(p, v["courier"] / v[p]))
    print(f"| {what} | {cell(v['courier'])} | {cell(v['ompi'])} | {cell(v['mpich'])} | "
          f"{ratio('ompi')} | {ratio('mpich')} | {better} | `{cmd}` |")
try:
    st = json.load(open(os.path.join(res, "startup", "startup.json")))["ranks"]
except OSError:
    st = {}
for n in sorted(st, key=int):
    c, o, m = st[n]["Courier"], st[n]["Open MPI"], st[n]["MPICH"]
    cell = lambda x: "–" if x is None else f"{x:.0f} ms"
    ratio = lambda x: "–" if not x else fmt_ratio(c / x)
    print(f"| start-up, {n} ranks | {cell(c)} | {cell(o)} | {cell(m)} | {ratio(o)} | {ratio(m)} | lower | "
          f"`benches/compare_startup.sh {n}` |")
