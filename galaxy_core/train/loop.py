"""The training loop shared by every model family.

:func:`train` takes a validated :class:`~galaxy_core.config.Config` and a run folder, and reports
through two callbacks so a CLI or a UI can drive it without the loop knowing either exists:
``progress_fn(step, total, record)`` after every metrics record and ``abort_fn() -> bool`` polled
every step (a true answer saves ``last`` and stops cleanly with state "stopped").

Determinism and exact resume: batch order is a permutation per epoch seeded by ``(seed, epoch)``
and latents/augmentations by ``(seed, step)``, so resuming from a checkpoint at step ``s``
continues exactly as an uninterrupted run would (up to floating-point non-determinism of the
device) without storing random-generator state. The learning-rate schedule is a function of the
step, so it resumes too.
"""

from __future__ import annotations

import math
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import galaxy_core
from galaxy_core.config import Config, to_toml
from galaxy_core.data import load_dataset
from galaxy_core.data.prepared import PreparedDataset
from galaxy_core.data.transforms import Augment
from galaxy_core.errors import CheckpointError
from galaxy_core.io.atomic import atomic_write_text
from galaxy_core.io.render import make_grid, save_png, to_rgb
from galaxy_core.models.registry import get_arch, make_config
from galaxy_core.io.checkpoint import (
    flatten_optimizer,
    load_checkpoint,
    prefixed,
    save_checkpoint,
    subdict,
    unflatten_optimizer,
)
from galaxy_core.train.ema import ema_beta_at, make_ema, update_ema
from galaxy_core.train.losses import d_loss, g_loss
from galaxy_core.train.run import RunFolder, truncate_metrics

ProgressFn = Callable[[int, int, dict], None]
AbortFn = Callable[[], bool]


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7919 + stream) % (2**63))


class BatchSource:
    """Yields the real batch for a given step from a prepared dataset, deterministically."""

    def __init__(self, data: PreparedDataset, batch_size: int, seed: int):
        arr = data.images
        self.n = len(data)
        self.uint8 = arr.dtype == np.uint8
        # Small datasets are held in memory; large ones are gathered from the memory map.
        self.images = torch.from_numpy(np.array(arr)) if arr.nbytes < 2**31 else arr
        self.batch_size = batch_size
        self.seed = seed
        self._perm_epoch = -1
        self._perm = None

    def steps_per_epoch(self) -> float:
        return self.n / self.batch_size

    def _perm_for(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 104_729 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def batch(self, step: int) -> torch.Tensor:
        """Float32 (B, C, H, W) in [-1, 1]."""
        start = step * self.batch_size
        idx = []
        while len(idx) < self.batch_size:
            epoch, offset = divmod(start + len(idx), self.n)
            take = min(self.batch_size - len(idx), self.n - offset)
            idx.extend(self._perm_for(epoch)[offset : offset + take].tolist())
        if isinstance(self.images, torch.Tensor):
            x = self.images[idx]
        else:
            order = np.argsort(idx)
            x = torch.from_numpy(np.array(self.images[np.asarray(idx)[order]]))[np.argsort(order)]
        x = x.float()
        return x / 127.5 - 1.0 if self.uint8 else x


def learning_rate(base: float, step: int, cfg: Config, steps_per_epoch: float) -> float:
    t = cfg.train
    if t.lr_step_every <= 0:
        return base
    period = t.lr_step_every * (steps_per_epoch if t.lr_step_unit == "epoch" else 1.0)
    return base * t.lr_gamma ** math.floor(step / max(period, 1e-9))


@dataclass
class Networks:
    G: torch.nn.Module
    D: torch.nn.Module
    G_ema: torch.nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    model_cfg: object


def resolved_model(cfg: Config, data: PreparedDataset) -> dict:
    """The model table with resolution and bands taken from the data, and every default filled."""
    values = cfg.model_values()
    values["resolution"] = data.resolution
    values["num_bands"] = data.num_bands
    model_cfg = make_config(cfg.arch, values)
    return {"arch": cfg.arch, **asdict(model_cfg)}


def build_networks(cfg: Config, model: dict, device: torch.device) -> Networks:
    spec = get_arch(model["arch"])
    model_cfg = make_config(model["arch"], {k: v for k, v in model.items() if k != "arch"})
    G = spec.build_G(model_cfg).to(device)
    D = spec.build_D(model_cfg).to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    G_ema = make_ema(G)
    t = cfg.train
    opt_G = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
    opt_D = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
    return Networks(G, D, G_ema, opt_G, opt_D, model_cfg)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def network_tensors(nets: Networks, *, with_optimizer: bool) -> tuple[dict, dict]:
    tensors = {**prefixed("G", nets.G.state_dict()), **prefixed("D", nets.D.state_dict()),
               **prefixed("G_ema", nets.G_ema.state_dict())}
    opt_meta = {}
    if with_optimizer:
        for name, opt in (("opt_G", nets.opt_G), ("opt_D", nets.opt_D)):
            t, meta = flatten_optimizer(name, opt)
            tensors.update(t)
            opt_meta[name] = meta
    return tensors, opt_meta


class Trainer:
    """Holds the state of one run; :func:`train` is the public entry point."""

    def __init__(self, cfg: Config, run: RunFolder, *, init_from: str | None = None, progress: bool = True):
        self.cfg, self.run = cfg, run
        t = cfg.train
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        self.device = select_device(t.device)
        self.data = load_dataset(cfg.data.dataset, resolution=cfg.data.resolution, crop=cfg.data.crop,
                                 count=cfg.data.count, seed=cfg.data.seed,
                                 normalisation=cfg.data.normalisation, progress=progress)
        self.augment = Augment.from_dict(asdict(cfg.augment))
        self.augment.check_channels(self.data.channels)
        self.model = resolved_model(cfg, self.data)
        self.nets = build_networks(cfg, self.model, self.device)
        self.batches = BatchSource(self.data, t.batch_size, t.seed)
        self.fixed_z = get_arch(self.model["arch"]).sample_z(
            self.nets.model_cfg, cfg.log.grid_size, generator=torch.Generator().manual_seed(t.seed + 12345))
        self.step = 0
        self.best: dict | None = None
        self.elapsed = 0.0
        self.amp = t.amp and self.device.type == "cuda"
        self.evaluator = None
        if cfg.log.eval_every > 0:
            from galaxy_core.train.live import make_live_evaluator

            self.evaluator = make_live_evaluator(self.data, n_samples=cfg.log.eval_samples, device=self.device,
                                                 extractor=cfg.log.eval_extractor)
        if init_from:
            self._init_weights(init_from)

    # state
    def _init_weights(self, path: str) -> None:
        tensors, meta = load_checkpoint(path)
        if meta["model"] != self.model:
            raise CheckpointError(f"{path}: model {meta['model']} does not match this config's model {self.model}")
        for name in ("G", "D", "G_ema"):
            getattr(self.nets, name).load_state_dict(subdict(tensors, name))

    def resume(self) -> bool:
        last = self.run.checkpoint("last")
        if not last.exists():
            return False
        tensors, meta = load_checkpoint(last)
        if meta["model"] != self.model:
            raise CheckpointError(f"{last}: run was trained with model {meta['model']}, config now says {self.model}")
        for name in ("G", "D", "G_ema"):
            getattr(self.nets, name).load_state_dict(subdict(tensors, name))
        self.nets.opt_G.load_state_dict(unflatten_optimizer("opt_G", tensors, meta["optimizer"]["opt_G"]))
        self.nets.opt_D.load_state_dict(unflatten_optimizer("opt_D", tensors, meta["optimizer"]["opt_D"]))
        self.fixed_z = tensors["fixed_z"]
        self.step = int(meta["training"]["step"])
        self.elapsed = float(meta["training"].get("wall_time_s", 0.0))
        self.best = meta.get("best")
        truncate_metrics(self.run.metrics_path, after_step=self.step)
        self.run.log(f"resumed from step {self.step}")
        return True

    def card(self, *, with_optimizer: bool) -> tuple[dict, dict]:
        tensors, opt_meta = network_tensors(self.nets, with_optimizer=with_optimizer)
        tensors["fixed_z"] = self.fixed_z
        t = self.cfg.train
        kimg = self.step * t.batch_size / 1000
        meta = {
            "kind": "gan",
            "arch": self.model["arch"],
            "model": self.model,
            "data": self.data.description(),
            "config": self.cfg.to_dict(),
            "training": {
                "step": self.step,
                "kimg": kimg,
                "epochs": self.step / self.batches.steps_per_epoch(),
                "wall_time_s": self.elapsed,
                "images_per_s": (self.step * t.batch_size / self.elapsed) if self.elapsed else None,
                "device": str(self.device) if self.device.type != "cuda" else torch.cuda.get_device_name(self.device),
                "cpu": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "galaxy_core": galaxy_core.__version__,
                "git_commit": _git_commit(),
                "seed": t.seed,
                "run": str(self.run.root),
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            "metrics": dict(self.best["metrics"]) if self.best else {},
            "best": self.best,
        }
        if with_optimizer:
            meta["optimizer"] = opt_meta
        return tensors, meta

    def save(self, name: str) -> None:
        tensors, meta = self.card(with_optimizer=True)
        save_checkpoint(self.run.checkpoints_dir / name, tensors, meta)

    # work
    def set_lr(self) -> tuple[float, float]:
        spe = self.batches.steps_per_epoch()
        lr_g = learning_rate(self.cfg.train.lr_g, self.step, self.cfg, spe)
        lr_d = learning_rate(self.cfg.train.lr_d, self.step, self.cfg, spe)
        for opt, lr in ((self.nets.opt_G, lr_g), (self.nets.opt_D, lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr
        return lr_g, lr_d

    def train_step(self) -> dict[str, torch.Tensor]:
        t, nets, dev = self.cfg.train, self.nets, self.device
        gen = _step_generator(t.seed, self.step, 0)
        real = self.augment(self.batches.batch(self.step), gen, channels=self.data.channels).to(dev, non_blocking=True)
        z = get_arch(self.model["arch"]).sample_z(nets.model_cfg, t.batch_size, generator=gen).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
            fake = nets.G(z)
            real_logits = nets.D(real)
            fake_logits = nets.D(fake.detach())
            loss_D = d_loss(t.loss, real_logits.float(), fake_logits.float(), label_smoothing=t.label_smoothing)
        nets.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        nets.opt_D.step()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
            fake_logits_G = nets.D(fake)
            loss_G = g_loss(t.loss, fake_logits_G.float())
        nets.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        nets.opt_G.step()
        if t.ema_beta > 0:
            update_ema(nets.G_ema, nets.G, ema_beta_at(t.ema_beta, self.step))
        else:
            nets.G_ema.load_state_dict(nets.G.state_dict())
        return {
            "loss_D": loss_D.detach(),
            "loss_G": loss_G.detach(),
            "D_x": torch.sigmoid(real_logits.detach().float()).mean(),
            "D_G_z": torch.sigmoid(fake_logits.detach().float()).mean(),
        }

    @torch.no_grad()
    def sample_grid(self) -> Path:
        G = self.nets.G_ema
        imgs = G(self.fixed_z.to(self.device)).float().cpu().numpy()
        rgb = to_rgb(imgs, self.data.channels)
        path = self.run.samples_dir / f"step_{self.step:07d}.png"
        save_png(path, make_grid(rgb, ncols=int(math.sqrt(len(rgb)))), scale=2 if self.data.resolution <= 32 else 1)
        return path

    def evaluate(self) -> dict | None:
        if self.evaluator is None:
            return None
        rec = self.evaluator(self.nets.G_ema, lambda n, g: get_arch(self.model["arch"]).sample_z(self.nets.model_cfg, n, generator=g))
        value = rec[self.evaluator.name]
        if self.best is None or value < self.best["value"]:
            self.best = {"metric": self.evaluator.name, "value": value, "step": self.step, "metrics": rec}
            self.save("best")
        return rec


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = True,
    init_from: str | None = None,
    progress_fn: ProgressFn | None = None,
    abort_fn: AbortFn | None = None,
    progress: bool = True,
) -> dict:
    """Train a GAN as configured, writing everything into ``run_dir``.

    Parameters
    ----------
    cfg : Config
        A validated configuration (see :mod:`galaxy_core.config`).
    run_dir : path
        The run folder; created if needed. With ``resume`` and an existing ``last`` checkpoint
        the run continues from it.
    init_from : path, optional
        Checkpoint whose G, D and G_ema weights initialise a new run (fine-tuning).
    progress_fn, abort_fn : callables, optional
        See module docstring.
    progress : bool
        Show dataset-preparation progress bars.

    Returns
    -------
    dict
        The final status record.
    """
    run = RunFolder(run_dir).create()
    run.write_status("starting", step=0, total=cfg.train.steps, message="preparing data")
    try:
        trainer = Trainer(cfg, run, init_from=init_from, progress=progress)
        resumed = resume and trainer.resume()
        full_cfg = cfg.to_dict()
        full_cfg["model"] = trainer.model
        atomic_write_text(run.config_path, to_toml(full_cfg))
        np.save(run.samples_dir / "fixed_z.npy", trainer.fixed_z.numpy())
        return _loop(trainer, progress_fn, abort_fn, resumed)
    except Exception as e:
        run.write_status("failed", message=f"{type(e).__name__}: {e}")
        run.log(f"failed: {type(e).__name__}: {e}")
        raise


def _loop(tr: Trainer, progress_fn: ProgressFn | None, abort_fn: AbortFn | None, resumed: bool) -> dict:
    cfg, run = tr.cfg, tr.run
    total, lg = cfg.train.steps, cfg.log
    run.write_status("running", step=tr.step, total=total, message="resumed" if resumed else "training")
    run.log(f"{'resuming' if resumed else 'starting'} at step {tr.step} of {total} on {tr.device}; "
            f"{len(tr.data)} images from {tr.data.name}")
    if not resumed:
        tr.sample_grid()
    acc: dict[str, torch.Tensor] = {}
    n_acc, t_mark = 0, time.perf_counter()
    imgs_since = 0
    state = "finished"
    while tr.step < total:
        if abort_fn is not None and abort_fn():
            state = "stopped"
            break
        lr_g, lr_d = tr.set_lr()
        out = tr.train_step()
        tr.step += 1
        for k, v in out.items():
            acc[k] = acc.get(k, 0) + v
        n_acc += 1
        imgs_since += cfg.train.batch_size
        if tr.step % lg.metrics_every == 0 or tr.step == total:
            now = time.perf_counter()
            dt = now - t_mark
            tr.elapsed += dt
            rec = {"step": tr.step, "kimg": tr.step * cfg.train.batch_size / 1000,
                   "epoch": tr.step / tr.batches.steps_per_epoch(),
                   **{k: float(v) / n_acc for k, v in acc.items()},
                   "lr_G": lr_g, "lr_D": lr_d, "images_per_s": imgs_since / dt if dt > 0 else None,
                   "time": time.time()}
            if lg.eval_every and (tr.step % lg.eval_every == 0 or tr.step == total):
                rec.update(tr.evaluate() or {})
            run.append_metrics(rec)
            run.write_status("running", step=tr.step, total=total, message="training")
            if progress_fn is not None:
                progress_fn(tr.step, total, rec)
            acc, n_acc, imgs_since = {}, 0, 0
            t_mark = time.perf_counter()
        if tr.step % lg.sample_every == 0:
            tr.sample_grid()
        if tr.step % lg.checkpoint_every == 0 and tr.step < total:
            tr.save("last")
    tr.elapsed += time.perf_counter() - t_mark if n_acc else 0.0
    if tr.step % lg.sample_every != 0:
        tr.sample_grid()
    tr.save("last")
    run.write_status(state, step=tr.step, total=total, message=f"{state} at step {tr.step}")
    run.log(f"{state} at step {tr.step}")
    return run.read_status()
