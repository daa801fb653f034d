"""Live FID against CPU-minutes of training for several runs, one plot, and a summary table.

Usage::

    python scripts/plot_fid_cpu.py OUT.png "TITLE" LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--budget MIN]

Reads each run folder's ``metrics.jsonl``: x is ``cpu_s / 60`` (CPU-minutes the training process
spent training, live evaluation excluded), y the live ``fid_galaxy_*`` value (the galaxy encoder;
every run must use the same metric name, i.e. the same sample size and real reference). With
``--budget`` only records up to that many CPU-minutes are used. Prints, per run: the number of
evaluations, the best FID and when, the last FID, and the CPU-minutes at which the run first
reached the best FID of the first run listed (the baseline).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio


def fid_curve(run_dir: Path, budget_min: float = math.inf) -> tuple[str, list[tuple[float, float, int]]]:
    """(metric name, [(cpu_min, fid, step), ...]) from a run's metrics.jsonl."""
    name, pts = "", []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        keys = [k for k in rec if k.startswith("fid_galaxy")]
        if not keys or rec.get("cpu_s") is None or rec.get(keys[0]) is None:  # null: not measured
            continue
        name = keys[0]
        m = rec["cpu_s"] / 60
        if m <= budget_min:
            pts.append((m, float(rec[name]), int(rec["step"])))
    return name, pts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("title")
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR; the first is the baseline")
    ap.add_argument("--budget", type=float, default=math.inf, help="CPU-minutes to plot")
    args = ap.parse_args()
    curves = {}
    for spec in args.runs:
        label, path = spec.split("=", 1)
        curves[label] = fid_curve(Path(path), args.budget)
    names = {n for n, _ in curves.values()}
    if len(names) != 1:
        raise SystemExit(f"runs use different live metrics: {sorted(names)}")
    metric = names.pop()
    fig = go.Figure()
    for label, (_, pts) in curves.items():
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=label))
    fig.update_layout(title=args.title, template="plotly_white",
                      xaxis_title="training CPU-minutes (one thread; live evaluation excluded)",
                      yaxis_title=f"live {metric} (log scale; lower is better)")
    fig.update_yaxes(type="log")
    pio.write_image(fig, args.out, width=800, height=480)
    base_label = next(iter(curves))
    base_best = min(p[1] for p in curves[base_label][1])
    print(f"{metric}; baseline {base_label} best {base_best:.1f}")
    print("| run | evaluations | best FID (step, CPU-min) | last FID (step, CPU-min) | first at or below baseline best |")
    print("|---|---:|---:|---:|---:|")
    for label, (_, pts) in curves.items():
        best = min(pts, key=lambda p: p[1])
        last = pts[-1]
        reach = next((p for p in pts if p[1] <= base_best), None)
        reach_s = f"{reach[0]:.1f} min (step {reach[2]})" if reach else "never"
        print(f"| {label} | {len(pts)} | {best[1]:.1f} ({best[2]}, {best[0]:.1f}) | {last[1]:.1f} ({last[2]}, "
              f"{last[0]:.1f}) | {reach_s} |")


if __name__ == "__main__":
    main()
