"""Fine-tuning sweep over the number of frozen generator layers: one ``galaxygan train`` per K.

Each run starts from ``--init`` (``galaxygan train --init``), freezes the first K units of G
(``train.freeze_g = K``; unit ``train.freeze_unit``, see the family's ``freeze_units``) and
trains with the given config. The table gives, per K, the best live metric of the run (the
first ``fid_*`` key its metrics record, which names the extractor and the sample size) and the
step it was reached at. The StyleGAN galaxy thesis froze 0-5 layers when moving from simulated
to real galaxies; this repeats that experiment on any config.

Usage::

    python scripts/freeze_sweep.py configs/stylegan_hdf64_ft.toml --init checkpoints/stylegan_sim64.json \\
        --k 0 2 4 --out runs/sweep --set train.steps=60

Writes ``OUT/k{K}/`` run folders and ``OUT/sweep.md`` (a Markdown table) and prints the table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from galaxy_core.train.run import read_metrics


def best_metric(run_dir: Path) -> tuple[str | None, float | None, int | None]:
    """(metric name, lowest value, its step) of a run's live ``fid_*`` metric."""
    recs = read_metrics(run_dir / "metrics.jsonl")
    names = sorted({k for r in recs for k in r if k.startswith("fid_")})
    if not names:
        return None, None, None
    name = names[0]
    best = min((r for r in recs if name in r), key=lambda r: r[name])
    return name, float(best[name]), int(best["step"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--init", required=True, help="checkpoint to fine-tune from")
    p.add_argument("--k", type=int, nargs="+", default=[0, 2, 4], help="frozen generator units per run")
    p.add_argument("--out", required=True, help="folder for the run folders and sweep.md")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in a.k:
        run = out / f"k{k}"
        cmd = [sys.executable, "-m", "galaxy_core.cli", "train", a.config, "--init", a.init, "--run-dir", str(run),
               "--quiet", "--set", f"train.freeze_g={k}", *[x for s in a.set for x in ("--set", s)]]
        t0 = time.perf_counter()
        done = subprocess.run(cmd)
        wall = time.perf_counter() - t0
        name, value, step = best_metric(run)
        rows.append((k, name, value, step, wall, done.returncode))
        print(f"K={k}: {name}={value} at step {step} ({wall:.0f} s, exit {done.returncode})", flush=True)
    lines = ["| K frozen | best live metric | value | at step | wall time (s) |", "|---|---|---|---|---|"]
    for k, name, value, step, wall, rc in rows:
        v = f"{value:.1f}" if value is not None else f"failed (exit {rc})"
        lines.append(f"| {k} | {name} | {v} | {step} | {wall:.0f} |")
    table = "\n".join(lines) + "\n"
    (out / "sweep.md").write_text(table)
    print(table)
    return 0 if all(r[-1] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
