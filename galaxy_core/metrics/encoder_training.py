"""Training of the shipped galaxy feature encoder (``checkpoints/galaxy_encoder``).

The encoder (:class:`galaxy_core.metrics.features.GalaxyEncoder`) is trained on built-in data
only, with two losses on a shared 128-d representation:

* **supervised**: a linear head regresses the standardised truth parameters of the ``sim``
  galaxies (:data:`TARGETS`: r magnitude, g-r and r-i colours, log half-light radius,
  ellipticity and its two orientation components, bulge fraction, redshift, seeing, and the
  galaxy's offset from the centre) from the image, so the features encode what astronomers
  measure;
* **self-supervised**: the NT-Xent contrastive loss of SimCLR (Chen et al. 2020, ICML, "A
  simple framework for contrastive learning of visual representations") through a small
  projection head, on two augmented views (flips, quarter turns, shifts of up to 2 px, weak
  noise) of ``sim`` *and* ``hdf`` images, so the RGB ``hdf`` stamps get meaningful features too.

Geometric augmentations change some truth values in a known way (a flip reverses the sign of
the orientation component ``e2`` and of one offset; a quarter turn reverses both orientation
components and swaps the offsets), and the regression targets of each view are transformed
to match.

A held-out part of ``sim`` (the last 10 %) and of ``hdf`` (every fifth stamp) is never trained
on. On it the run measures the regression R^2 per parameter and the soundness figures of
:mod:`galaxy_core.metrics.features` (disturbance curves, FID between training and held-out
images, FID to trivial baselines); all go into the checkpoint JSON (the model card).

Reproduce the shipped file with::

    .venv/bin/python -m galaxy_core.metrics.encoder_training --steps 1500 --out checkpoints/galaxy_encoder
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galaxy_core.metrics.features import (
    BASELINES,
    DISTURBANCES,
    EncoderConfig,
    GalaxyEncoder,
    baseline_images,
    disturbance_curves,
    encoder_extractor,
    fid_between,
    save_encoder,
)

# name -> function(truth table, stamp centre in pixels) -> raw value per galaxy
TARGETS: dict[str, Callable] = {
    "mag_r": lambda t, c: t["mag_r"],
    "g_r": lambda t, c: t["mag_g"] - t["mag_r"],
    "r_i": lambda t, c: t["mag_r"] - t["mag_i"],
    "log10_hlr": lambda t, c: np.log10(t["hlr_arcsec"]),
    "ellipticity": lambda t, c: t["ellipticity"],
    "e1": lambda t, c: t["ellipticity"] * np.cos(np.deg2rad(2 * t["pa_deg"])),  # e cos 2PA
    "e2": lambda t, c: t["ellipticity"] * np.sin(np.deg2rad(2 * t["pa_deg"])),  # e sin 2PA
    "bulge_frac": lambda t, c: t["bulge_frac"],
    "redshift": lambda t, c: t["redshift"],
    "psf_fwhm": lambda t, c: t["psf_fwhm"],
    "dx": lambda t, c: t["x"] - c,  # pixels right of the stamp centre (x is the column)
    "dy": lambda t, c: t["y"] - c,  # pixels below the stamp centre (y is the row)
}


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_encoder` (saved in the model card)."""

    steps: int = 1500
    batch_sim: int = 48           # sim images per step (two views each)
    batch_hdf: int = 16           # hdf images per step (two views each)
    lr: float = 2e-3              # Adam, cosine decay after a 50-step warm-up
    weight_decay: float = 1e-4
    temperature: float = 0.2      # NT-Xent temperature
    contrastive_weight: float = 0.5
    max_shift: int = 2            # pixels, augmentation
    max_noise: float = 0.03       # Gaussian noise sigma, model units, augmentation
    holdout_sim: float = 0.1      # last fraction of sim never trained on
    holdout_hdf_every: int = 5    # every n-th hdf stamp never trained on
    proj_dim: int = 64


# ---------------------------------------------------------------------------------- targets


def sim_targets(catalog, *, resolution: int) -> tuple[list[str], np.ndarray]:
    """Raw regression targets of every sim image: names and (N, K) float64.

    ``catalog`` is the prepared dataset's truth table (pixel columns in output pixels) and
    ``resolution`` its image side.
    """
    centre = (resolution - 1) / 2
    cols = [np.asarray(fn(catalog, centre), np.float64) for fn in TARGETS.values()]
    return list(TARGETS), np.stack(cols, axis=1)


def _index(names: list[str], *keys: str) -> list[int]:
    return [names.index(k) for k in keys]


# ------------------------------------------------------------------------------ augmentation


def augment(x: torch.Tensor, y: torch.Tensor | None, *, names: list[str], cfg: TrainConfig,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """One random view of each image, and its transformed raw targets.

    Parameters
    ----------
    x : Tensor, (N, C, H, W), float32, [-1, 1]
    y : Tensor, (N, K), float64, or None
        Raw targets in the order of ``names`` (None for images without truth).

    Returns
    -------
    views : Tensor, (N, C, H, W), float32, [-1, 1]
    targets : Tensor, (N, K) or None
    """
    n = len(x)
    flip_h, flip_v, turns, shifts = _geometry(n, cfg=cfg, gen=gen)
    sigma = torch.rand(n, generator=gen) * cfg.max_noise
    out = torch.empty_like(x)
    for i in range(n):
        v = x[i]
        if flip_h[i]:
            v = v.flip(-1)
        if flip_v[i]:
            v = v.flip(-2)
        v = torch.rot90(v, int(turns[i]), dims=(-2, -1))
        out[i] = torch.roll(v, (int(shifts[i, 0]), int(shifts[i, 1])), dims=(-2, -1))
    out = (out + sigma[:, None, None, None] * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
    if y is None:
        return out, None
    return out, _transform_targets(y, names=names, flip_h=flip_h, flip_v=flip_v, turns=turns, shifts=shifts)


def _geometry(n: int, *, cfg: TrainConfig, gen: torch.Generator):
    """Random flips (two bool (n,)), quarter turns (n,) in 0..3 and shifts (n, 2) (rows, cols)."""
    flip_h, flip_v = torch.rand(2, n, generator=gen) < 0.5
    turns = torch.randint(0, 4, (n,), generator=gen)
    shifts = torch.randint(-cfg.max_shift, cfg.max_shift + 1, (n, 2), generator=gen)
    return flip_h, flip_v, turns, shifts


def augmented_target_stats(y: np.ndarray, *, names: list[str], cfg: TrainConfig, seed: int = 0
                           ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Mean and std of the targets as seen in augmented views (shifts widen dx, dy; turns mix
    e1, e2), used to standardise them. ``y``: (N, K) raw; returns two (K,) arrays.

    A target that is constant in the augmented views gets std 1 (it is only centred), so that
    standardising it gives 0 rather than NaN and training stays finite."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.from_numpy(y)
    flip_h, flip_v, turns, shifts = _geometry(len(t), cfg=cfg, gen=gen)
    seen = _transform_targets(t, names=names, flip_h=flip_h, flip_v=flip_v, turns=turns, shifts=shifts).numpy()
    std = seen.std(0)
    return seen.mean(0), np.where(np.ptp(seen, axis=0) == 0, 1.0, std)


def _transform_targets(y, *, names, flip_h, flip_v, turns, shifts) -> torch.Tensor:
    """Targets seen in the augmented view (same order of operations as :func:`augment`).

    Offsets: x is the column, y the row. A horizontal flip negates dx, a vertical one dy; a
    quarter turn (``torch.rot90``, k=1) maps (dx, dy) to (dy, -dx); a roll adds the shift.
    Orientation: either flip negates e2 (PA -> -PA); an odd number of quarter turns negates
    e1 and e2 (2 PA -> 2 PA + 180 deg).
    """
    y = y.clone()
    ie1, ie2, idx, idy = _index(names, "e1", "e2", "dx", "dy")
    y[flip_h, idx] *= -1
    y[flip_v, idy] *= -1
    y[flip_h ^ flip_v, ie2] *= -1
    odd = turns % 2 == 1
    y[odd, ie1] *= -1
    y[odd, ie2] *= -1
    for k in range(1, 4):  # k quarter turns: (dx, dy) -> (dy, -dx) applied k times
        sel = turns >= k
        dx, dy = y[sel, idx].clone(), y[sel, idy].clone()
        y[sel, idx], y[sel, idy] = dy, -dx
    y[:, idy] += shifts[:, 0].to(y.dtype)
    y[:, idx] += shifts[:, 1].to(y.dtype)
    return y


# ----------------------------------------------------------------------------------- losses


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """NT-Xent loss of SimCLR (Chen et al. 2020): each view must pick its partner out of the
    2N - 1 other views by cosine similarity. ``z1``, ``z2``: (N, P) projections of two views."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, P)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own partner
    n = len(z1)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, partner)


class Heads(nn.Module):
    """Regression head (features -> K standardised targets) and SimCLR projection head."""

    def __init__(self, feature_dim: int, n_targets: int, proj_dim: int):
        super().__init__()
        self.reg = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(feature_dim, n_targets))
        self.proj = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(feature_dim, feature_dim),
                                  nn.LeakyReLU(0.2), nn.Linear(feature_dim, proj_dim))  # fmt: skip


# ------------------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """The built-in images split for training and evaluation (all float32 in [-1, 1] on use).

    sim images stay memory-mapped (float16) and are read per batch.
    """

    sim: object                 # PreparedDataset "sim"
    hdf_images: np.ndarray      # (375, 3, 64, 64) float32, all hdf stamps
    sim_train: np.ndarray       # indices
    sim_test: np.ndarray
    hdf_train: np.ndarray
    hdf_test: np.ndarray
    names: list[str]
    targets: np.ndarray         # (N_sim, K) float64, raw
    mean: np.ndarray            # (K,), of the training split's targets in augmented views
    std: np.ndarray             # (K,)

    def sim_batch(self, idx: np.ndarray) -> torch.Tensor:
        idx = np.sort(idx)  # sorted reads are faster on a memory map
        return torch.from_numpy(self.sim.to_model_range(idx)), torch.from_numpy(self.targets[idx])


def load_training_data(cfg: TrainConfig, *, resolution: int = 64, progress: bool = False) -> TrainingData:
    """Load (building on first use) ``sim`` and ``hdf`` and split them (see module docstring)."""
    from galaxy_core.data.sources import load_dataset

    sim = load_dataset("sim", resolution=resolution, progress=progress)
    hdf = load_dataset("hdf", resolution=resolution, progress=progress)
    names, targets = sim_targets(sim.catalog, resolution=resolution)
    n_test = int(round(len(sim) * cfg.holdout_sim))
    sim_train, sim_test = np.arange(len(sim) - n_test), np.arange(len(sim) - n_test, len(sim))
    h = np.arange(len(hdf))
    hdf_test = h[h % cfg.holdout_hdf_every == cfg.holdout_hdf_every - 1]
    hdf_train = np.setdiff1d(h, hdf_test)
    mean, std = augmented_target_stats(targets[sim_train], names=names, cfg=cfg)
    return TrainingData(sim=sim, hdf_images=hdf.to_model_range(), sim_train=sim_train, sim_test=sim_test,
                        hdf_train=hdf_train, hdf_test=hdf_test, names=names, targets=targets,
                        mean=mean, std=std)  # fmt: skip


# ----------------------------------------------------------------------------------- training


def _lr_factor(step: int, total: int, *, warmup: int = 50) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _train_step(E, heads, opt, data: TrainingData, cfg: TrainConfig, *, rng: np.random.Generator,
                gen: torch.Generator) -> dict[str, float]:  # fmt: skip
    xs, ys = data.sim_batch(rng.choice(data.sim_train, cfg.batch_sim, replace=False))
    xh = torch.from_numpy(data.hdf_images[rng.choice(data.hdf_train, cfg.batch_hdf, replace=False)])
    mean, std = torch.from_numpy(data.mean), torch.from_numpy(data.std)
    views, targets = [], []
    for _ in range(2):
        vs, ts = augment(xs, ys, names=data.names, cfg=cfg, gen=gen)
        vh, _ = augment(xh, None, names=data.names, cfg=cfg, gen=gen)
        views.append(torch.cat([vs, vh]))
        targets.append(((ts - mean) / std).float())
    h1, h2 = E(views[0]), E(views[1])  # (B, feature_dim) each
    ns = cfg.batch_sim
    reg = 0.5 * (F.mse_loss(heads.reg(h1[:ns]), targets[0]) + F.mse_loss(heads.reg(h2[:ns]), targets[1]))
    con = nt_xent(heads.proj(h1), heads.proj(h2), temperature=cfg.temperature)
    loss = reg + cfg.contrastive_weight * con
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"loss": loss.item(), "regression": reg.item(), "contrastive": con.item()}


def _fit(data: TrainingData, cfg: TrainConfig, *, enc_cfg: EncoderConfig, seed: int,
         progress: Callable[[int, int, dict], None] | None) -> tuple[GalaxyEncoder, Heads, list[dict]]:  # fmt: skip
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    E = GalaxyEncoder(enc_cfg)
    heads = Heads(enc_cfg.feature_dim, len(data.names), cfg.proj_dim)
    params = [*E.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg.steps))
    history, running = [], None
    E.train()
    for step in range(cfg.steps):
        logs = _train_step(E, heads, opt, data, cfg, rng=rng, gen=gen)
        sched.step()
        running = logs if running is None else {k: 0.95 * running[k] + 0.05 * v for k, v in logs.items()}
        if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
            history.append({"step": step + 1, **{k: round(v, 4) for k, v in running.items()}})
        if progress is not None:
            progress(step + 1, cfg.steps, running)
    return E.eval(), heads.eval(), history


# --------------------------------------------------------------------------------- evaluation


def _r2(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: 1 - SS_res / SS_tot."""
    ss_res = ((truth - pred) ** 2).sum(0)
    ss_tot = ((truth - truth.mean(0)) ** 2).sum(0)
    return 1.0 - ss_res / ss_tot


@torch.inference_mode()
def regression_r2(E, heads, data: TrainingData, cfg: TrainConfig, *, augmented: bool, seed: int = 0
                  ) -> dict[str, float]:  # fmt: skip
    """R^2 of the regression head on the held-out sim split.

    ``augmented=False``: the images as they are (offsets span only +-0.5 px there, so dx, dy
    R^2 is not meaningful); ``augmented=True``: one random view of each (flips, quarter turns,
    shifts, no noise) with its transformed targets.
    """
    x, y = data.sim_batch(data.sim_test)
    if augmented:
        x, y = augment(x, y, names=data.names, cfg=TrainConfig(**{**asdict(cfg), "max_noise": 0.0}),
                       gen=torch.Generator().manual_seed(seed))  # fmt: skip
    pred = torch.cat([heads.reg(E(x[a : a + 500])) for a in range(0, len(x), 500)]).double().numpy()
    pred = pred * data.std + data.mean
    return {k: round(float(v), 4) for k, v in zip(data.names, _r2(pred, y.numpy()))}


def soundness(extractor, data: TrainingData, *, seed: int, n_train: int = 5000, n_curve: int = 500,
              levels: int = 4) -> dict:  # fmt: skip
    """The figures recorded in the model card (see :mod:`galaxy_core.metrics.features`).

    * ``fid_train_vs_heldout``: FID between training-split and held-out real images;
    * ``fid_baselines``: FID between the same training-split images and each baseline built
      from the held-out images (same sample sizes, so directly comparable);
    * ``disturbance``: curves on held-out sim (``n_curve`` images) and on all hdf stamps.
    """
    rng = np.random.default_rng(seed)
    sim_train = data.sim.to_model_range(np.sort(data.sim_train[:n_train]))
    sim_test = data.sim.to_model_range(data.sim_test)
    hdf_train, hdf_test = data.hdf_images[data.hdf_train], data.hdf_images[data.hdf_test]
    out: dict = {"fid_train_vs_heldout": {}, "fid_baselines": {}, "sizes": {}}
    for name, train, test in (("sim", sim_train, sim_test), ("hdf", hdf_train, hdf_test)):
        f_train = extractor(train)
        out["sizes"][name] = {"train": len(train), "heldout": len(test)}
        out["fid_train_vs_heldout"][name] = round(fid_between(f_train, extractor(test)), 4)
        out["fid_baselines"][name] = {
            kind: round(fid_between(f_train, extractor(baseline_images(kind, test, rng=rng))), 4)
            for kind in BASELINES
        }
    curves = {
        "sim": disturbance_curves(sim_test[:n_curve], extractor, levels=levels, rng=rng),
        "hdf": disturbance_curves(data.hdf_images, extractor, levels=levels, rng=rng),
    }
    out["disturbance"] = {
        "strengths": [k / levels for k in range(1, levels + 1)],
        "strength_1": dict(DISTURBANCES),
        "images": {"sim": min(n_curve, len(sim_test)), "hdf": len(data.hdf_images)},
        **{ds: {k: [round(v, 4) for v in vals] for k, vals in c.items()} for ds, c in curves.items()},
    }
    out["monotonic"] = all(np.all(np.diff(v) > 0) for c in curves.values() for v in c.values())
    worst = min(min(b.values()) / max(out["fid_train_vs_heldout"][ds], 1e-12)
                for ds, b in out["fid_baselines"].items())  # fmt: skip
    out["min_baseline_over_heldout"] = round(worst, 2)
    return out


# ----------------------------------------------------------------------------------- entry point


def _hardware(threads: int) -> dict:
    return {
        "device": "cpu",
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def train_encoder(*, out_path: str | os.PathLike, steps: int = 1500, seed: int = 0,
                  progress: Callable[[int, int, dict], None] | None = None, threads: int = 1,
                  config: TrainConfig | None = None) -> Path:  # fmt: skip
    """Train the galaxy encoder on the built-in data, evaluate it and save it with its model card.

    Parameters
    ----------
    out_path : path
        Destination ``NAME`` (writes ``NAME.safetensors`` + ``NAME.json``).
    steps : int
        Optimiser steps (about 0.4 s each on one busy CPU core with the defaults).
    seed : int
        Seeds initialisation, batches and augmentations.
    progress : callable, optional
        ``progress(step, total, losses)`` after every step (running averages of ``loss``,
        ``regression``, ``contrastive``).
    threads : int
        torch intra-op threads while training (restored afterwards); 1 is fastest on a
        machine already busy with other work.
    config : TrainConfig, optional
        Hyper-parameters; ``steps`` overrides its ``steps``.

    Returns
    -------
    Path
        The written JSON.
    """
    cfg = TrainConfig(**{**asdict(config or TrainConfig()), "steps": int(steps)})
    if cfg.steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        data = load_training_data(cfg)
        enc_cfg = EncoderConfig()
        t1 = time.perf_counter()
        E, heads, history = _fit(data, cfg, enc_cfg=enc_cfg, seed=seed, progress=progress)
        t2 = time.perf_counter()
        r2 = {"augmented": regression_r2(E, heads, data, cfg, augmented=True, seed=seed),
              "unaugmented": regression_r2(E, heads, data, cfg, augmented=False)}
        checks = soundness(encoder_extractor(E, id="unsaved"), data, seed=seed)
        t3 = time.perf_counter()
    finally:
        torch.set_num_threads(old_threads)
    meta = _model_card(cfg, data, seed=seed, history=history, r2=r2, checks=checks, threads=threads,
                       seconds={"data": t1 - t0, "training": t2 - t1, "evaluation": t3 - t2})  # fmt: skip
    return save_encoder(out_path, E, meta=meta)


def _model_card(cfg: TrainConfig, data: TrainingData, *, seed, history, r2, checks, threads, seconds) -> dict:
    return {
        "name": "galaxy_encoder",
        "description": (
            "Feature extractor for FID/KID-style metrics on galaxy stamps (metric names "
            "*_galaxy_*). Values are NOT comparable to Inception FID. Input (N, 1 or 3, H, W) "
            "in [-1, 1], resized to 64 px; output 128 features."
        ),
        "references": [
            "Heusel et al. 2017, NeurIPS (FID and its disturbance test)",
            "Chen et al. 2020, ICML (SimCLR, NT-Xent contrastive loss)",
        ],
        "training": {
            "data": {
                "sim": {**data.sim.description(), "train": len(data.sim_train), "heldout": len(data.sim_test),
                        "heldout_rule": f"last {cfg.holdout_sim:.0%} of the images"},
                "hdf": {"count": len(data.hdf_images), "train": len(data.hdf_train), "heldout": len(data.hdf_test),
                        "heldout_rule": f"every {cfg.holdout_hdf_every}th stamp (index % {cfg.holdout_hdf_every} == "
                                        f"{cfg.holdout_hdf_every - 1})"},
            },  # fmt: skip
            "objective": "MSE on standardised sim truth + contrastive_weight * NT-Xent on sim and hdf views",
            "targets": data.names,
            "target_mean": data.mean.round(6).tolist(),
            "target_std": data.std.round(6).tolist(),
            "augmentation": "random h/v flips, quarter turns, shifts up to max_shift px (wrap), "
                            "Gaussian noise sigma ~ U(0, max_noise); targets transformed to match",
            "config": asdict(cfg),
            "seed": seed,
            "hardware": _hardware(threads),
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "history": history,
            "command": f".venv/bin/python -m galaxy_core.metrics.encoder_training --steps {cfg.steps} "
                       f"--seed {seed} --out checkpoints/galaxy_encoder",
        },
        "r2_heldout": r2,
        "soundness": checks,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m galaxy_core.metrics.encoder_training --steps N --out checkpoints/galaxy_encoder``"""
    from tqdm.auto import tqdm

    p = argparse.ArgumentParser(prog="python -m galaxy_core.metrics.encoder_training",
                                description=__doc__.split("\n")[0])  # fmt: skip
    p.add_argument("--out", default="checkpoints/galaxy_encoder",
                   help="destination NAME (writes NAME.safetensors + NAME.json)")  # fmt: skip
    p.add_argument("--steps", type=int, default=TrainConfig.steps, help="optimiser steps (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    args = p.parse_args(argv)
    with tqdm(total=args.steps, desc="training galaxy encoder", unit="step") as bar:
        def progress(step, total, logs):
            bar.update(step - bar.n)
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})

        path = train_encoder(out_path=args.out, steps=args.steps, seed=args.seed, progress=progress,
                             threads=args.threads)  # fmt: skip
    from galaxy_core.io.checkpoint import read_meta

    meta = read_meta(path)
    print(f"wrote {path}")
    for kind, r2 in meta["r2_heldout"].items():
        print(f"held-out R^2 ({kind}):", ", ".join(f"{k} {v:.3f}" for k, v in r2.items()))
    s = meta["soundness"]
    print("FID train vs held-out:", s["fid_train_vs_heldout"], "baselines:", s["fid_baselines"])
    print("disturbance curves monotonic:", s["monotonic"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
