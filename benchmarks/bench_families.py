"""Training throughput of each family's CPU preset, as a ratio against the bare networks.

For each preset config the project's loop (:mod:`galaxy_core.train.loop`: the family's objective
with its phases and optimiser steps, differentiable augmentation, EMA, metrics records, status
heartbeats) trains for a block of steps; the bare side runs, on the same networks and batch size,
only a forward and backward pass of one training step (G forward; D on real and on detached fake,
backward; D on fake, backward through G), with no optimiser step, augmentation, decoder or
pixel loss. Blocks alternate in one process so machine load affects both alike; the figure is the
median of the paired ratios (loop images/s / bare images/s). The ratio is below 1 by the cost of
what the family adds to a plain GAN step (FastGAN's decoders, StackGAN's pixel loss) and of the
loop itself.

    python benchmarks/bench_families.py [--configs configs/dcgan_hdf64.toml ...] [--block 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from galaxy_core.config import load_config
from galaxy_core.train.loop import Trainer, _loop
from galaxy_core.train.run import RunFolder

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["configs/dcgan_hdf64.toml", "configs/fastgan_hdf64.toml", "configs/stackgan_sim128.toml",
           "configs/began_hdf32.toml", "configs/positions_hdf_cond.toml"]


def _first_output(out):
    """The logits of a discriminator that may also return reconstructions."""
    return out[0] if isinstance(out, tuple) else out


def bare_steps(tr: Trainer, G, D, steps: int) -> float:
    """Seconds for ``steps`` bare forward+backward passes of G and D (see module docstring)."""
    fam, cfg, b = tr.family, tr.model_cfg, tr.cfg.train.batch_size
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in range(steps):
        batch = tr.kind.batch(step, gen)
        inp = batch["low"] if fam.data_kind == "pair" else fam.sample_latents(cfg, b, generator=gen)
        fake = G(inp)
        loss_d = _first_output(D(batch["image"])).mean() - _first_output(D(fake.detach())).mean()
        loss_d.backward()
        loss_g = -_first_output(D(fake)).mean()
        loss_g.backward()
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def bench(config: str, *, block: int, rounds: int) -> dict:
    overrides = ["train.device=cpu", "log.metrics_every=5", "log.sample_every=1000000",
                 "log.checkpoint_every=1000000", "log.eval_every=0", "train.steps=1"]
    cfg = load_config(ROOT / config, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunFolder(Path(tmp) / "run").create()
        tr = Trainer(cfg, run, progress=False)
        built = tr.family.build(tr.model_cfg)
        G, D = built["G"], built["D"]
        batch = cfg.train.batch_size
        cfg.train.steps = 2  # warm-up both sides
        _loop(tr, None, None, resumed=True)
        bare_steps(tr, G, D, 2)
        ours, bare = [], []
        for _ in range(rounds):
            cfg.train.steps = tr.step + block
            t0 = time.perf_counter()
            _loop(tr, None, None, resumed=True)
            ours.append(block * batch / (time.perf_counter() - t0))
            bare.append(block * batch / bare_steps(tr, G, D, block))
    return {"config": config, "arch": cfg.arch, "batch": batch, "resolution": tr.data.resolution,
            "loop": statistics.median(ours), "bare": statistics.median(bare),
            "ratio": statistics.median(o / b for o, b in zip(ours, bare))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=PRESETS)
    ap.add_argument("--block", type=int, default=5, help="steps per timed block")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rows = [bench(c, block=args.block, rounds=args.rounds) for c in args.configs]
    print(f"{torch.get_num_threads()} threads, {args.rounds} x {args.block} steps per preset")
    print(f"{'preset':32s} {'arch':9s} {'px':>4s} {'batch':>5s} {'loop img/s':>10s} {'bare img/s':>10s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['config']:32s} {r['arch']:9s} {r['resolution']:4d} {r['batch']:5d} {r['loop']:10.2f} "
              f"{r['bare']:10.2f} {r['ratio']:6.3f}")


if __name__ == "__main__":
    main()
