"""StyleGAN CPU figures: training throughput of the CPU preset and the cost of a mixing grid.

1. Training images/s of ``configs/stylegan_sim64.toml`` through the real loop
   (:class:`galaxy_core.train.loop.Trainer`: every phase incl. the lazy R1 one, style mixing,
   EMA) on the configured data (the 10,000-galaxy ``sim`` set), after a warm-up.
2. A 5x5 style-mixing grid through the page's code path
   (:func:`galaxy_core.explore.style.mixing_grid_rgb`: mapping of the 10 latents, mixing, one
   synthesis call, clamping, RGB rendering, tiling) against the bare synthesis forward
   (``G.synthesis(ws)`` under ``no_grad``) of the same 35 images (25 cells + 10 headers).
   Calls alternate in one process so machine load affects both alike; medians of ``--repeats``.
   Goal: ratio <= 1.3.

    python benchmarks/bench_stylegan.py [--checkpoint checkpoints/stylegan_sim64.json] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from galaxy_core.config import load_config
from galaxy_core.explore.style import layer_mask, mapping, mixing_grid_rgb, mixing_ws, w_plus
from galaxy_core.models.pretrained import load_pretrained
from galaxy_core.paths import checkpoints_dir, configs_dir
from galaxy_core.train.loop import Trainer
from galaxy_core.train.run import RunFolder


def train_throughput(*, steps: int, threads: int) -> tuple[float, int]:
    cfg = load_config(configs_dir() / "stylegan_sim64.toml",
                      ["log.eval_every=0", "train.device=cpu", f"train.threads={threads}"])
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, RunFolder(Path(tmp) / "run"), progress=False)
        for _ in range(3):  # warm-up
            tr.set_lr()
            tr.train_step()
            tr.step += 1
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.set_lr()
            tr.train_step()
            tr.step += 1
        dt = time.perf_counter() - t0
    return steps * cfg.train.batch_size / dt, cfg.train.batch_size


def mixing_ratio(path: str, *, repeats: int) -> tuple[float, float, float]:
    model = load_pretrained(path)
    G = model.G
    rows, cols = model.latents(1, 5).numpy(), model.latents(2, 5).numpy()
    mask = layer_mask(model, "coarse")
    w = mapping(model, np.concatenate([rows, cols]))
    ws = torch.from_numpy(np.concatenate([w_plus(w, G.num_ws), mixing_ws(w[:5], w[5:], mask).reshape(25, G.num_ws, -1)]))
    page, bare = [], []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        mixing_grid_rgb(model, rows, cols, mask=mask)
        t1 = time.perf_counter()
        with torch.no_grad():
            G.synthesis(ws, noise_mode="const")
        t2 = time.perf_counter()
        page.append(t1 - t0)
        bare.append(t2 - t1)
    p, b = statistics.median(page[1:]), statistics.median(bare[1:])
    return p, b, p / b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(checkpoints_dir() / "stylegan_sim64.json"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=16, help="timed steps (16 includes one lazy R1 phase)")
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    p, b, r = mixing_ratio(a.checkpoint, repeats=a.repeats)
    print(f"5x5 mixing grid (35 images, {a.threads} thread(s)): page path {p * 1000:.0f} ms, "
          f"bare synthesis {b * 1000:.0f} ms, ratio {r:.2f} (goal <= 1.3)")
    ips, batch = train_throughput(steps=a.steps, threads=a.threads)
    print(f"training, CPU preset (configs/stylegan_sim64.toml, batch {batch}, {torch.get_num_threads()} thread(s)): "
          f"{ips:.1f} images/s")


if __name__ == "__main__":
    main()
