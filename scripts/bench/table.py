#!/usr/bin/env python3
"""Turns bnorm_bench's JSON into the Markdown table of doc/benchmarks.md.

Usage: table.py [--plot OUT.png] bench.json [bench2.json ...]
With several files (runs of the same suite), every time is the median over the runs: on a noisy
machine a single run can move one row by 2× while its neighbours (the peers, run next to it) do
not. One row per (layer, layout, op): bnorm (the default implementation, cpu:hwy) in ms, the fastest
peer on the same layout, their ratio (peer time / bnorm time: > 1 means bnorm is faster), bnorm's
effective bandwidth (the op's floor bytes / time) and that as a percentage of the STREAM triad
measured in the same run; then the fastest peer on any layout (oneDNN's blocked nChw16c included)
and the geometric mean of the ratios. With --plot, also a bar chart of the ratios, one panel per op
(gnuplot, written atomically).
"""
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile

OP_ORDER = {"fwd_train": 0, "fwd_infer": 1, "bwd": 2, "fwd_add_relu": 3, "bwd_add_relu": 4}
LAYOUT_COLOURS = {"NCHW": "#1f77b4", "NHWC": "#ff7f0e", "NC": "#2ca02c"}


def ratio_rows(rows):
    """(shape, op, layout, bnorm's (ms, GB/s), the fastest same-layout peer's (ms, who) or None,
    the fastest peer on any layout (ms, who, layout) or None) for every row, in the table's order."""
    out = []
    for (shape, op) in sorted(rows, key=lambda k: (k[0], OP_ORDER[k[1]])):
        entries = rows[(shape, op)]
        layouts = sorted({l for l, w, _, _ in entries if w == "bnorm:cpu:hwy"})
        peers_any = [(ms, w, l) for l, w, ms, _ in entries if not w.startswith("bnorm")]
        best_any = min(peers_any) if peers_any else None
        for layout in layouts:
            mine = [(ms, gbs) for l, w, ms, gbs in entries if w == "bnorm:cpu:hwy" and l == layout][0]
            same = [(ms, w) for l, w, ms, _ in entries if l == layout and not w.startswith("bnorm")]
            out.append((shape, op, layout, mine, min(same) if same else None, best_any))
    return out


def plot(path, table, stream):
    """Writes `path` (PNG): per op, the ratio (fastest peer on the same layout / bnorm) of every
    shape and layout as a bar on a log scale, 1 marked; bars above the line are rows bnorm wins."""
    shapes = sorted({shape for shape, *_ in table})
    label = {s: re.sub(r"\.bn\d+$", "", s.split(":")[0]) for s in shapes}
    ops = sorted({op for _, op, *_ in table}, key=OP_ORDER.get)
    ratios = [best[0] / mine[0] for _, _, _, mine, best, _ in table if best]
    # Whole powers of two around every ratio, at least 0.5 to 8.
    lo = 2.0 ** min(-1, math.floor(math.log2(min(ratios, default=1))))
    hi = 2.0 ** max(3, math.ceil(math.log2(max(ratios, default=1))) + 1)
    with tempfile.TemporaryDirectory() as tmp:
        script = [
            "set terminal pngcairo size 1500,900 font 'DejaVu Sans,10'",
            f"set output '{path}.tmp'",
            "set multiplot layout 2,3 title 'bnorm against the fastest peer on the same layout "
            f"(ratio = peer time / bnorm time; above 1: bnorm faster; STREAM {stream:.1f} GB/s)'",
            "set logscale y 2", f"set yrange [{lo}:{hi}]", "set format y '%g'",
            "set grid ytics", "set style fill solid 0.85 noborder", "set boxwidth 0.36",
            "set xtics rotate by 35 right nomirror", "set key top right",
            "set xrange [-0.7:%f]" % (len(shapes) - 0.3),
            "set xtics (" + ", ".join(f"'{label[s]}' {i}" for i, s in enumerate(shapes)) + ")",
        ]
        for op in ops:
            data = os.path.join(tmp, f"{op}.dat")
            with open(data, "w") as f:
                for shape, row_op, layout, mine, best, _ in table:
                    if row_op != op or not best:
                        continue
                    x = shapes.index(shape) + {"NCHW": -0.19, "NHWC": 0.19}.get(layout, 0.0)
                    colour = int(LAYOUT_COLOURS.get(layout, "#7f7f7f")[1:], 16)
                    f.write(f"{x} {best[0] / mine[0]:.4f} {colour}\n")
            keys = ", ".join(f"keyentry with boxes lc rgb '{c}' title '{l}'"
                             for l, c in LAYOUT_COLOURS.items())
            script += [
                f"set title '{op}' noenhanced",
                f"plot '{data}' using 1:2:3 with boxes lc rgb variable notitle, "
                f"'{data}' using 1:2:(sprintf('%.2f', $2)) with labels offset 0,0.5 font ',7' notitle, "
                f"1 with lines dt 2 lc rgb 'black' notitle, {keys}",
            ]
        script.append("unset multiplot")
        gp = os.path.join(tmp, "ratios.gp")
        with open(gp, "w") as f:
            f.write("\n".join(script) + "\n")
        subprocess.run(["gnuplot", gp], check=True)
    os.replace(path + ".tmp", path)


def main():
    args = sys.argv[1:]
    plot_path = None
    if args[:1] == ["--plot"]:
        if len(args) < 3:
            sys.exit("usage: table.py [--plot OUT.png] bench.json [bench2.json ...]")
        plot_path, args = args[1], args[2:]
    if not args:
        sys.exit("usage: table.py [--plot OUT.png] bench.json [bench2.json ...]")
    docs = [json.load(open(f)) for f in args]
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
    table = ratio_rows(rows)
    for shape, op, layout, mine, best, best_any in table:
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
    if plot_path:
        plot(plot_path, table, stream)


if __name__ == "__main__":
    main()
