"""Fine-tuning sweep over the number of frozen generator layers: one ``galaxygan train`` per K.

Each run starts from ``--init`` (``galaxygan train --init``), freezes the first K units of G
(``train.freeze_g = K``; unit ``train.freeze_unit``, see the family's ``freeze_units``) and
trains with the given config. The table gives, per K, the best live metric of the run (the
first ``fid_*`` key its metrics record, which names the extractor and the sample size) and the
step it was reached at; the wall time of a run includes its share of the machine when
``--parallel`` runs several at once. The StyleGAN galaxy thesis froze 0-5 layers when moving from simulated
to real galaxies; this repeats that experiment on any config.

Usage::

    python scripts/freeze_sweep.py configs/stylegan_hdf64_ft.toml --init checkpoints/stylegan_sim64.json \\
        --k 0 1 2 3 4 5 --out runs/sweep --parallel 2

Writes ``OUT/k{K}/`` run folders and ``OUT/sweep.md`` (a Markdown table) and prints the table.
``--floor-only`` computes the real-vs-real floor of the live metric on the config's data instead.
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
    measured = [r for r in recs if isinstance(r.get(name), (int, float))]  # null: not measured
    if not measured:
        return name, None, None
    best = min(measured, key=lambda r: r[name])
    return name, float(best[name]), int(best["step"])


def real_floor(config: str, sets: list[str], *, draws: int = 10) -> dict:
    """Real-vs-real floor of the live metric for the config's data: ``log.eval_samples`` real
    images drawn at random in place of generated ones, against the same cached reference
    statistics (those images are part of the reference when the data has <= 5,000 images),
    and against the statistics of the other real images (disjoint). Mean and standard
    deviation over ``draws`` draws."""
    import numpy as np

    from galaxy_core.config import load_config
    from galaxy_core.data import load_dataset
    from galaxy_core.metrics.features import load_extractor, reference_statistics
    from galaxy_core.metrics.fid import feature_statistics, frechet_distance

    cfg = load_config(config, sets)
    d = cfg.data
    ds = load_dataset(d.dataset, resolution=d.resolution, crop=d.crop, count=d.count if d.dataset == "sim" else None,
                      seed=d.seed, normalisation=d.normalisation, progress=False)
    ext = load_extractor("galaxy")
    mu, sigma, feats = reference_statistics(ds, ext, max_images=5000)
    n, k, rng = len(feats), cfg.log.eval_samples, np.random.default_rng(0)
    same, other = [], []
    for _ in range(draws):
        idx = rng.choice(n, k, replace=False)
        rest = np.setdiff1d(np.arange(n), idx)
        m, s = feature_statistics(feats[idx])
        same.append(frechet_distance(m, s, mu, sigma))
        m2, s2 = feature_statistics(feats[rest])
        other.append(frechet_distance(m, s, m2, s2))
    return {"extractor": ext.name, "samples": k, "reference": n, "vs_reference": (float(np.mean(same)), float(np.std(same))),
            "vs_other_real": (float(np.mean(other)), float(np.std(other)))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--init", required=True, help="checkpoint to fine-tune from")
    p.add_argument("--k", type=int, nargs="+", default=[0, 2, 4], help="frozen generator units per run")
    p.add_argument("--out", required=True, help="folder for the run folders and sweep.md")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--parallel", type=int, default=1, help="runs at a time (each uses train.threads threads)")
    p.add_argument("--floor-only", action="store_true",
                   help="only compute the real-vs-real floor of the live metric (no runs)")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.floor_only:
        f = real_floor(a.config, a.set)
        line = (f"real-vs-real floor, {f['extractor']} features, {f['samples']} real images: "
                f"{f['vs_reference'][0]:.1f} +- {f['vs_reference'][1]:.1f} against the live metric's reference "
                f"({f['reference']} images, including those), {f['vs_other_real'][0]:.1f} +- {f['vs_other_real'][1]:.1f} "
                f"against the other {f['reference'] - f['samples']} real images")
        (out / "floor.md").write_text(line + "\n")
        print(line)
        return 0

    def command(k: int) -> list[str]:
        return [sys.executable, "-m", "galaxy_core.cli", "train", a.config, "--init", a.init, "--run-dir",
                str(out / f"k{k}"), "--quiet", "--set", f"train.freeze_g={k}",
                *[x for s in a.set for x in ("--set", s)]]

    # up to --parallel runs at a time, each started as soon as a slot is free
    pending, running, done = list(a.k), {}, {}
    while pending or running:
        while pending and len(running) < a.parallel:
            k = pending.pop(0)
            running[k] = (subprocess.Popen(command(k)), time.perf_counter())
        time.sleep(1.0)
        for k, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                del running[k]
                name, value, step = best_metric(out / f"k{k}")
                done[k] = (k, name, value, step, time.perf_counter() - t0, proc.returncode)
                print(f"K={k}: {name}={value} at step {step} ({done[k][4]:.0f} s, exit {proc.returncode})", flush=True)
    rows = [done[k] for k in a.k]
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
