#!/usr/bin/env python3
"""Turns bnorm_bench's JSON into the Markdown table of doc/benchmarks.md.

Usage: table.py bench.json [bench2.json ...]
With several files (runs of the same suite), every time is the median over the runs: on a noisy
machine a single run can move one row by 2× while its neighbours (the peers, run next to it) do
not. One row per (layer, layout, op): bnorm (the default implementation, cpu:hwy) in ms, the fastest
peer on the same layout, their ratio (peer time / bnorm time: > 1 means bnorm is faster), bnorm's
effective bandwidth (the op's floor bytes / time) and that as a percentage of the STREAM triad
measured in the same run; then the fastest peer on any layout (oneDNN's blocked nChw16c included)
and the geometric mean of the ratios.
"""
import json
import math
import statistics
import sys


def main():
    docs = [json.load(open(f)) for f in sys.argv[1:]]
    doc = docs[0]
    ctx = doc["context"]
    streams = sorted(float(d["context"].get("stream_triad_GB/s", "nan")) for d in docs)
    stream = statistics.median(streams)
    times = {}
    for d in docs:
        for b in d["benchmarks"]:
            if b.get("error_occurred"):
                continue
            name = b["name"].split("/min_time")[0]
            ms = b["real_time"] if b["time_unit"] == "ms" else b["real_time"] / 1e6
            times.setdefault(name, []).append((ms, b.get("GB/s", 0.0)))
    rows = {}
    for name, runs in times.items():
        op, shape, layout, who = name.split("/", 3)
        ms = statistics.median(r[0] for r in runs)
        gbs = statistics.median(r[1] for r in runs)
        rows.setdefault((shape, op), []).append((layout, who, ms, gbs))
    if len(docs) > 1:
        print(f"Median of {len(docs)} runs of the suite (STREAM triad per run: "
              + ", ".join(f"{v:.1f}" for v in streams) + " GB/s).  ")
    print(f"Machine: {ctx.get('num_cpus')} CPUs at {ctx.get('mhz_per_cpu')} MHz; bnorm threads "
          f"{ctx.get('bnorm_threads')}, Highway target {ctx.get('bnorm_hwy_target')}; "
          f"STREAM triad {stream:.1f} GB/s (same run{'s, median' if len(docs) > 1 else ''}).  ")
    for peer in ("libtorch", "onednn"):
        if peer in ctx:
            print(f"{peer}: {ctx[peer]}  ")
    print()
    print("| layer (shape) | layout | op | bnorm ms | fastest peer, same layout | ratio | bnorm GB/s | % STREAM | fastest peer, any layout |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios, losses = [], []
    order = {"fwd_train": 0, "fwd_infer": 1, "bwd": 2, "fwd_add_relu": 3, "bwd_add_relu": 4}
    for (shape, op) in sorted(rows, key=lambda k: (k[0], order[k[1]])):
        entries = rows[(shape, op)]
        layouts = sorted({l for l, w, _, _ in entries if w == "bnorm:cpu:hwy"})
        peers_any = [(ms, w, l) for l, w, ms, _ in entries if not w.startswith("bnorm")]
        best_any = min(peers_any) if peers_any else None
        for layout in layouts:
            mine = [(ms, gbs) for l, w, ms, gbs in entries if w == "bnorm:cpu:hwy" and l == layout][0]
            same = [(ms, w) for l, w, ms, _ in entries if l == layout and not w.startswith("bnorm")]
            best = min(same) if same else None
            ratio = best[0] / mine[0] if best else float("nan")
            if best:
                ratios.append(ratio)
                if ratio < 1:
                    losses.append(f"{shape} {layout} {op} ({ratio:.2f})")
            print(f"| {shape} | {layout} | {op} | {mine[0]:.3f} | "
                  + (f"{best[1]} {best[0]:.3f}" if best else "–")
                  + f" | {ratio:.2f} | {mine[1]:.1f} | {100 * mine[1] / stream:.0f}% | "
                  + (f"{best_any[1]} {best_any[2]} {best_any[0]:.3f}" if best_any else "–") + " |")
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print()
        print(f"Geometric mean of (fastest peer time / bnorm time), same layout, over {len(ratios)} "
              f"rows: **{geo:.2f}**.")
        print(f"Rows where a peer is faster: {len(losses)}" + (": " + "; ".join(losses) if losses else "."))


if __name__ == "__main__":
    main()
