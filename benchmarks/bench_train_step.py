"""Training-loop overhead: the project's loop against a bare DCGAN step of the same architecture.

Both train the same DCGAN on the same prepared data. The project side runs the real loop
(``galaxy_core.train.loop``: augmentation, EMA, metrics records, status heartbeats, fixed-latent
grids and a checkpoint at the end of each block); the bare side is the textbook step written
below (random batch, D step, G step, nothing else). Blocks alternate in one process so machine
load affects both alike; the figure is the ratio of throughputs (goal >= 0.95).

    python benchmarks/bench_train_step.py [--dataset hdf] [--resolution 64] [--width 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from galaxy_core.config import load_config
from galaxy_core.models import get_arch
from galaxy_core.train.loop import Trainer, _loop
from galaxy_core.train.run import RunFolder


def bare_steps(G, D, opt_G, opt_D, data: torch.Tensor, steps: int, batch: int, z_dim: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        real = data[torch.randint(len(data), (batch,))]
        z = torch.randn(batch, z_dim)
        fake = G(z)
        lr, lf = D(real), D(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(lr, torch.ones_like(lr)) + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf))
        opt_D.zero_grad()
        loss_d.backward()
        opt_D.step()
        lg = D(fake)
        loss_g = F.binary_cross_entropy_with_logits(lg, torch.ones_like(lg))
        opt_G.zero_grad()
        loss_g.backward()
        opt_G.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="hdf")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--block", type=int, default=60, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    overrides = [f"data.dataset={args.dataset}", f"data.resolution={args.resolution}",
                 f"model.width={args.width}", f"train.batch_size={args.batch}", "train.device=cpu",
                 "log.metrics_every=10", "log.sample_every=50", "log.checkpoint_every=1000000",
                 "log.eval_every=0", "train.steps=1"]
    cfg = load_config(None, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder(Path(tmp) / "run").create()
        tr = Trainer(cfg, run, progress=False)
        spec = get_arch("dcgan")
        G, D = spec.build_G(tr.model_cfg), spec.build_D(tr.model_cfg)
        opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        data = torch.from_numpy(tr.data.to_model_range())
        # warm-up both sides
        cfg.train.steps = 5
        _loop(tr, None, None, resumed=True)
        bare_steps(G, D, opt_G, opt_D, data, 5, args.batch, tr.model_cfg.z_dim)
        ours, bare = [], []
        for _ in range(args.rounds):
            cfg.train.steps = tr.step + args.block
            t0 = time.perf_counter()
            _loop(tr, None, None, resumed=True)
            ours.append(args.block * args.batch / (time.perf_counter() - t0))
            bare.append(args.block * args.batch / bare_steps(G, D, opt_G, opt_D, data, args.block, args.batch,
                                                             tr.model_cfg.z_dim))
    ratio = statistics.median(o / b for o, b in zip(ours, bare))
    print(f"dcgan {args.resolution}px width {args.width} batch {args.batch} on {args.dataset}, "
          f"{torch.get_num_threads()} threads, {args.rounds} x {args.block} steps")
    print(f"bare step      : {statistics.median(bare):7.1f} images/s (median)")
    print(f"project loop   : {statistics.median(ours):7.1f} images/s (median)")
    print(f"ratio (project / bare, median of paired blocks): {ratio:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
