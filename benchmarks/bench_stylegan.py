"""StyleGAN CPU figures: training throughput of the CPU preset and the cost of a mixing grid.

1. Training images/s of ``configs/stylegan_sim64.toml`` through the real loop
   (:class:`galaxy_core.train.loop.Trainer`: every phase incl. the lazy R1 one, style mixing,
   augmentation, EMA) on the configured data (the 10,000-galaxy ``sim`` set), against a bare
   G+D step of the same networks and batch in the same process (G forward, D on real and
   generated images, non-saturating losses, both backward passes and Adam steps; no R1, mixing,
   augmentation or EMA). Steps alternate, so machine load affects both alike.
2. The same bare step with channels-first activations (``stylegan.MEMORY_FORMAT``) against the
   default channels-last ones: what the memory format buys on this CPU.
3. A 5x5 style-mixing grid through the page's code path
   (:func:`galaxy_core.explore.style.mixing_grid_rgb`: mapping of the 10 latents, mixing, one
   prefix-sharing synthesis call, clamping, RGB rendering, tiling) against the bare synthesis
   forward (``G.synthesis(ws)`` under ``no_grad``) of the same 35 images (25 cells + 10
   headers), for the coarse and the fine mask. Calls alternate; medians of ``--repeats``.
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
import torch.nn.functional as F

import galaxy_core.models.stylegan as sg
from galaxy_core.config import load_config
from galaxy_core.explore.style import layer_mask, mapping, mixing_grid_rgb, mixing_ws, w_plus
from galaxy_core.models.pretrained import load_pretrained
from galaxy_core.paths import checkpoints_dir, configs_dir
from galaxy_core.train.loop import Trainer
from galaxy_core.train.run import RunFolder


def _bare_step(G, D, opt_g, opt_d, real: torch.Tensor, gen: torch.Generator) -> None:
    z = torch.randn(len(real), G.z_dim, generator=gen)
    fake = G(z, noise_mode="random", generator=gen)
    loss_d = F.softplus(D(fake.detach())).mean() + F.softplus(-D(real)).mean()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_g = F.softplus(-D(fake)).mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()


def train_throughput(*, steps: int, threads: int) -> dict[str, float]:
    """Seconds per step (medians) of the loop, the bare step, and the bare step channels-first."""
    cfg = load_config(configs_dir() / "stylegan_sim64.toml",
                      ["log.eval_every=0", "train.device=cpu", f"train.threads={threads}"])
    times: dict[str, list[float]] = {"loop": [], "bare": [], "bare_nchw": []}
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, RunFolder(Path(tmp) / "run"), progress=False)
        G, D = tr.nets["G"], tr.nets["D"]
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-5, betas=(0.0, 0.99))
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-5, betas=(0.0, 0.99))
        gen = torch.Generator().manual_seed(0)
        real = tr.kind.batch(0, gen)["image"].float()
        for i in range(steps + 2):  # the first two rounds warm up
            t0 = time.perf_counter()
            tr.set_lr()
            tr.train_step()
            tr.step += 1
            t1 = time.perf_counter()
            _bare_step(G, D, opt_g, opt_d, real, gen)
            t2 = time.perf_counter()
            sg.MEMORY_FORMAT = torch.contiguous_format
            try:
                _bare_step(G, D, opt_g, opt_d, real.contiguous(), gen)
            finally:
                sg.MEMORY_FORMAT = torch.channels_last
            t3 = time.perf_counter()
            if i >= 2:
                times["loop"].append(t1 - t0)
                times["bare"].append(t2 - t1)
                times["bare_nchw"].append(t3 - t2)
    out = {k: statistics.median(v) for k, v in times.items()}
    # the loop's lazy R1 phase runs every r1_every steps: its share, spread over the steps
    out["loop_mean"] = statistics.fmean(times["loop"])
    out["batch"] = cfg.train.batch_size
    return out


def mixing_ratio(path: str, *, repeats: int, which: str) -> tuple[float, float, float]:
    model = load_pretrained(path)
    G = model.G
    rows, cols = model.latents(1, 5).numpy(), model.latents(2, 5).numpy()
    mask = layer_mask(model, which)
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
    for which in ("coarse", "fine"):
        p, b, r = mixing_ratio(a.checkpoint, repeats=a.repeats, which=which)
        print(f"5x5 mixing grid, {which} mask (35 images, {a.threads} thread(s)): page path {p * 1000:.0f} ms, "
              f"bare synthesis {b * 1000:.0f} ms, ratio {r:.2f} (goal <= 1.3)")
    t = train_throughput(steps=a.steps, threads=a.threads)
    n = t["batch"]
    print(f"training, CPU preset (configs/stylegan_sim64.toml, batch {n}, {torch.get_num_threads()} thread(s)): "
          f"loop {n / t['loop_mean']:.1f} images/s (mean over {a.steps} steps incl. R1; median step "
          f"{n / t['loop']:.1f} images/s); bare G+D step {n / t['bare']:.1f} images/s; "
          f"loop / bare time {t['loop_mean'] / t['bare']:.2f}")
    print(f"bare G+D step, channels-first activations: {n / t['bare_nchw']:.1f} images/s "
          f"(channels-last is {t['bare_nchw'] / t['bare']:.2f}x faster)")


if __name__ == "__main__":
    main()
