"""The training loop shared by every model family.

:func:`train` takes a validated :class:`~galaxy_core.config.Config` and a run folder, and reports
through two callbacks so a CLI or a UI can drive it without the loop knowing either exists:
``progress_fn(step, total, record)`` after every metrics record and ``abort_fn() -> bool`` polled
every step (a true answer saves ``last`` and stops cleanly with state "stopped").

The loop never names a family. It asks the registry for the family of ``model.arch``
(:class:`~galaxy_core.models.family.Family`), which builds named networks, optimisers and an
objective whose phases the loop runs (see :mod:`galaxy_core.models.family`). The loop owns data
order (:mod:`galaxy_core.train.kinds`), device, AMP, EMA copies, differentiable augmentation and
its adaptive probability (:mod:`galaxy_core.train.diffaug`), learning-rate schedules, metrics
records, sample grids, checkpoints, resume, fine-tuning (:mod:`galaxy_core.train.finetune`),
live evaluation and torchrun (:mod:`galaxy_core.train.distributed`).

Determinism and exact resume: batch order is a permutation per epoch seeded by ``(seed, epoch)``
and latents/augmentations by ``(seed, step)``, and torch's global generator (dropout) is seeded
by ``(seed, step, rank)`` at the start of every step, so resuming from a checkpoint at step ``s``
continues exactly as an uninterrupted run would (up to floating-point non-determinism of the
device) without storing random-generator state. The learning-rate schedule is a function of the
step, the augmentation probability (with the adaptive one's running sums) and the objective's
own state are saved in the checkpoint.

Time: every metrics record carries ``cpu_s``, the CPU seconds this process has spent training
(sums of :func:`time.process_time` deltas, all its threads, live evaluation excluded), and the
checkpoint's ``training`` table carries it as ``cpu_time_s`` beside ``wall_time_s``, so both
continue across a resume. CPU time is the fair clock on a machine shared with other jobs.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import galaxy_core
from galaxy_core.config import AugmentConfig, Config, to_toml
from galaxy_core.data import load_dataset
from galaxy_core.data.sources import BUILTIN, require_dataset
from galaxy_core.data.prepared import PreparedDataset
from galaxy_core.data.transforms import Augment
from galaxy_core.errors import CheckpointError, ConfigError, GalaxyGanError
from galaxy_core.io.atomic import atomic_open, atomic_write_text
from galaxy_core.io.checkpoint import (
    checkpoint_id,
    find_nonfinite,
    flatten_optimizer,
    load_checkpoint,
    prefixed,
    save_checkpoint,
    subdict,
    unflatten_optimizer,
)
from galaxy_core.models.family import Family, StepContext, latent_generator
from galaxy_core.models.registry import get_arch, make_config
from galaxy_core.train import distributed
from galaxy_core.train.diffaug import AdaptiveAugment, empty_cell, policy_ops
from galaxy_core.train.ema import ema_beta_at, make_ema, update_ema
from galaxy_core.train.finetune import InitReport, freeze, freeze_settings, frozen_names, load_matching
from galaxy_core.train.kinds import grid_num_classes, make_kind
from galaxy_core.train.run import STATES, RunFolder, truncate_metrics

ProgressFn = Callable[[int, int, dict], None]
AbortFn = Callable[[], bool]

MIN_LIVE_EVAL_IMAGES = 2    # a covariance needs two images
FEW_LIVE_EVAL_IMAGES = 50   # below this, live FID/KID are mostly noise
DIFF_KEYS = ("diff", "diff_p", "diff_policy", "ada_target", "ada_interval", "ada_kimg")


class TrainingDiverged(GalaxyGanError):
    """A loss or a weight became NaN or infinite."""


def select_device(name: str = "auto", *, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA (this process's GPU under torchrun), then Apple MPS, then CPU."""
    if name != "auto":
        dev = torch.device(name)
        return torch.device("cuda", local_rank) if dev.type == "cuda" and dev.index is None and local_rank else dev
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# Random streams of one step: 0 data and latents, 1 + rank the differentiable augmentation,
# GLOBAL_STREAM + rank torch's global generator (distinct while there are fewer than 4095 ranks).
GLOBAL_STREAM = 4096


def _step_seed(seed: int, step: int, stream: int) -> int:
    return (seed * 1_000_003 + step * 7919 + stream) % (2**63)


def _step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(_step_seed(seed, step, stream))


def learning_rate(base: float, step: int, cfg: Config, steps_per_epoch: float) -> float:
    t = cfg.train
    if t.lr_step_every <= 0:
        return base
    period = t.lr_step_every * (steps_per_epoch if t.lr_step_unit == "epoch" else 1.0)
    return base * t.lr_gamma ** math.floor(step / max(period, 1e-9))


def resolved_model(cfg: Config, data: PreparedDataset) -> dict:
    """The model table with what the data decides (resolution, bands) and every default filled."""
    family = get_arch(cfg.arch)
    values = family.resolve_config(cfg.model_values(), data)
    model_cfg = make_config(cfg.arch, values)
    return {"arch": cfg.arch, **asdict(model_cfg)}


def build_augment(cfg: AugmentConfig, channels: list[str], *,
                  grid_classes: int | None = None) -> tuple[Augment, AdaptiveAugment]:
    """The classic augmentation of real batches and the differentiable one applied before D.

    ``grid_classes``: the data are grids with this many cell classes, which D sees one-hot;
    the differentiable augmentation then moves whole cells only and fills with the empty class
    (see :mod:`galaxy_core.train.diffaug`)."""
    d = asdict(cfg)
    classic = Augment.from_dict({k: v for k, v in d.items() if k not in DIFF_KEYS})
    grid = grid_classes is not None
    ops = policy_ops(cfg.diff_policy, channels, grid=grid) if cfg.diff != "off" else ()
    diff = AdaptiveAugment(ops=ops, mode=cfg.diff, p=cfg.diff_p, target=cfg.ada_target,
                           interval=cfg.ada_interval, speed_kimg=cfg.ada_kimg,
                           fill=empty_cell(grid_classes) if grid else None)
    return classic, diff


def _git_commit() -> str | None:
    """The short commit of the package's source tree, ``-dirty`` if it has uncommitted changes;
    None outside a git checkout. Read once when a run starts (the code that runs), not at each
    save: a commit made while a run trains is not the code that trained it."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _settings(values: dict) -> str:
    return ", ".join(f"train.{k} = {v!r}" for k, v in values.items())


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity."""
    return list(find_nonfinite(tensors))


class Trainer:
    """Holds the state of one run; :func:`train` is the public entry point.

    Attributes
    ----------
    family : Family
    model : dict
        The resolved model table (``arch`` + every config field), as stored in checkpoints.
    model_cfg : dataclass
    nets : dict of str to nn.Module
        Every network by name (unwrapped).
    ema : dict of str to nn.Module
        EMA copies by network name (the checkpoint stores them as ``NAME_ema``).
    opts : dict of str to Optimizer
    objective : Objective
    """

    def __init__(self, cfg: Config, run: RunFolder, *, init_from: str | None = None, progress: bool = True,
                 dist: distributed.Dist | None = None):
        self.cfg, self.run = cfg, run
        self.dist = dist or distributed.Dist()
        t = cfg.train
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed)
        self.device = select_device(t.device, local_rank=self.dist.local_rank)
        if t.batch_size % self.dist.world_size:
            raise GalaxyGanError(f"train.batch_size = {t.batch_size} is not divisible by the {self.dist.world_size} "
                                 "torchrun processes; the batch is the global batch, split between them")
        self.local_batch = t.batch_size // self.dist.world_size
        self.data = self._load_data(cfg, progress)
        self.family: Family = get_arch(cfg.arch)
        self.model = resolved_model(cfg, self.data)
        self.model_cfg = make_config(self.model["arch"], {k: v for k, v in self.model.items() if k != "arch"})
        grid_classes = grid_num_classes(self.data) if self.family.data_kind == "grid" else None
        classic, self.diffaug = build_augment(cfg.augment, self.data.channels, grid_classes=grid_classes)
        self.kind = make_kind(self.family.data_kind, self.data, batch_size=t.batch_size, seed=t.seed, augment=classic,
                              rank=self.dist.rank, world_size=self.dist.world_size, family=self.family,
                              model_cfg=self.model_cfg)
        self.refs = self._load_references()
        self.nets = {k: v.to(self.device) for k, v in self.family.build(self.model_cfg).items()}
        self.family.attach_data(self.nets, self.data.description())
        if self.device.type == "cuda" and t.channels_last:
            self.nets = {k: v.to(memory_format=torch.channels_last) for k, v in self.nets.items()}
        self.init_report: InitReport | None = None  # what --init did in this process
        self.init_record: dict | None = None  # the card's engine.init: what the run started from
        if init_from:
            self._init_weights(init_from)
        self.frozen = self._freeze()
        self.ema = {k: make_ema(self.nets[k]) for k in self.family.ema}
        params = {k: [p for p in net.parameters() if p.requires_grad] for k, net in self.nets.items()}
        self.opts = self.family.optimizers(self.model_cfg, t, {k: v for k, v in params.items() if v})
        self.train_nets = {k: self.dist.wrap(v, self.device) for k, v in self.nets.items()}
        self.objective = self.family.objective_cls(self.model_cfg, t, self.train_nets)
        self.fixed_z = self.family.sample_latents(self.model_cfg, cfg.log.grid_size,
                                                  generator=latent_generator(t.seed, "grid"))
        k = self.family.num_classes(self.model_cfg)
        self.fixed_labels = torch.arange(cfg.log.grid_size) % k if k else None
        self.step = 0
        self.lr_scale = 1.0  # halved by each rollback after a non-finite loss
        self.rollbacks = 0
        self.best: dict | None = None
        self.last_eval: tuple[int, dict] | None = None  # (step, metrics) of the latest live evaluation
        self.elapsed = 0.0
        self.cpu_time = 0.0  # CPU seconds of this process in training (time.process_time), across resumes
        self.git_commit = _git_commit()
        self.amp = t.amp and self.device.type == "cuda"
        self.evaluator = None
        self.notices: list[str] = []  # said in log.txt, status.json and by the CLI
        if cfg.log.eval_every > 0 and len(self.data) < MIN_LIVE_EVAL_IMAGES:
            self.notices.append(f"live evaluation turned off: {self.data.name} has {len(self.data)} image(s) and FID/KID "
                                f"statistics need at least {MIN_LIVE_EVAL_IMAGES}; add images, or set log.eval_every=0 "
                                "to silence this")
        elif cfg.log.eval_every > 0 and len(self.data) < FEW_LIVE_EVAL_IMAGES:
            self.notices.append(f"{self.data.name} has only {len(self.data)} images: live FID/KID against so few real "
                                "images are noisy; compare runs on the same data only")
        if cfg.log.eval_every > 0 and self.dist.is_main and len(self.data) >= MIN_LIVE_EVAL_IMAGES:
            from galaxy_core.train.live import make_live_evaluator

            self.evaluator = make_live_evaluator(self.data, n_samples=cfg.log.eval_samples, device=self.device,
                                                 extractor=cfg.log.eval_extractor)

    # state -------------------------------------------------------------------------------
    def _load_references(self) -> dict:
        """The checkpoints the model runs after (a StackGAN's stage I). A run that already has a
        checkpoint keeps the ones it was trained with: the ids recorded in ``last`` are checked
        (:func:`~galaxy_core.models.pretrained.pinned_references`), so a stage I retrained in
        place is refused instead of being chained silently for the rest of the run."""
        from galaxy_core.io.checkpoint import read_meta
        from galaxy_core.models.pretrained import load_pretrained, pinned_references

        last = self.run.checkpoint("last")
        if last.exists():
            paths = pinned_references(last, (read_meta(last).get("engine") or {}).get("references"),
                                      self.family, self.model_cfg)
        else:
            paths = {role: Path(p) for role, p in self.family.references(self.model_cfg).items()}
        return {role: load_pretrained(path, device=self.device) for role, path in paths.items()}

    def _init_weights(self, path: str) -> None:
        from galaxy_core.paths import with_suffix_of

        path = with_suffix_of(path, ".json", (".json", ".safetensors")).resolve()  # recorded: any folder finds it
        tensors, meta = load_checkpoint(path)  # a malformed card is refused here, naming the file
        if "arch" not in meta:
            raise CheckpointError(f"{path}: the model card names no architecture ('arch'); --init needs a "
                                  "generator checkpoint written by galaxygan train or export")
        if meta.get("arch") != self.model["arch"]:
            raise CheckpointError(f"{path}: a {meta.get('arch')} checkpoint cannot initialise a {self.model['arch']} model")
        rep = load_matching(self.nets, tensors, source=str(path))
        rep.source_id = checkpoint_id(path)
        self.init_report = rep
        self.init_record = rep.to_dict() | {"sha": rep.source_id}

    def _freeze(self) -> dict[str, list[str]]:
        t = self.cfg.train
        out: dict[str, list[str]] = {}
        for net_name, k, unit in (("G", t.freeze_g, t.freeze_unit), ("D", t.freeze_d, "block")):
            if k <= 0:
                continue
            if net_name not in self.nets:
                raise GalaxyGanError(f"train.freeze_{net_name.lower()}: the {self.family.name} model has no network {net_name}")
            units = self.family.freeze_units(net_name, self.nets[net_name], unit)
            if k >= len(units):  # all frozen: no optimiser, and the phases that step it cannot run
                raise ConfigError(f"train.freeze_{net_name.lower()} = {k} but {net_name} has {len(units)} {unit}s and at "
                                  f"least one must train; freeze at most {len(units) - 1}")
            names = frozen_names(units, k)
            freeze(self.nets[net_name], names)
            out[net_name] = names
        return out

    def sampling_nets(self) -> dict[str, torch.nn.Module]:
        """The networks generation uses: EMA copies where there are some."""
        return {k: self.ema.get(k, v) for k, v in self.nets.items()}

    def resume(self) -> bool:
        """Load ``last`` (networks, EMA, optimisers, augmentation p, objective state, step).
        Nothing is written: :meth:`record_resume` does that once the run may go ahead."""
        last = self.run.checkpoint("last")
        if not last.exists():
            return False
        tensors, meta = load_checkpoint(last)
        trained = self.family.card_model(meta["model"])
        if trained != self.model:
            diff = sorted(k for k in {*trained, *self.model} if trained.get(k) != self.model.get(k))
            said = "; ".join(f"model.{k}: {trained.get(k)!r} in the run, {self.model.get(k)!r} in the config" for k in diff)
            raise CheckpointError(f"{last}: the run was trained with another model than the config describes ({said}); "
                                  "resume with the run's values (--set model.KEY=VALUE) or start a new run")
        was = freeze_settings(meta.get("config", {}).get("train", {}))
        now = freeze_settings(self.cfg.to_dict()["train"])
        if was != now:  # the saved optimiser state holds the run's trainable tensors only
            raise ConfigError(f"{last}: run was trained with {_settings(was)}, config now says {_settings(now)}; "
                              "resume with the run's frozen layers, or fine-tune with others in a new run "
                              f"(--init {last})")
        for name, net in self.nets.items():
            net.load_state_dict(subdict(tensors, name))
        for name, net in self.ema.items():
            net.load_state_dict(subdict(tensors, f"{name}_ema"))
        for name, opt in self.opts.items():
            # the saved groups carry the run's own hyperparameters (Adam's betas, eps, ...); those
            # of the config now in force are put back, so a resume with --set train.beta1=...
            # uses them (the learning rate is set every step from the schedule anyway)
            now_groups = [{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")}
                          for g in opt.param_groups]
            opt.load_state_dict(unflatten_optimizer(f"opt_{name}", tensors, meta["optimizer"][f"opt_{name}"]))
            for group, hyper in zip(opt.param_groups, now_groups):
                group.update(hyper)
        engine = meta.get("engine", {})
        # rank 0 holds every rank's ADA sums (see save); the other ranks start theirs at zero
        self.diffaug.load_state_dict(engine.get("augment", {}), with_sums=self.dist.is_main)
        self.lr_scale = float(engine.get("lr_scale", 1.0))
        self.init_record = engine.get("init")  # a resumed fine-tuning run still says what it started from
        self.objective.load_state_dict(engine.get("objective", {}))
        self.fixed_z = tensors["fixed_z"]
        if "fixed_labels" in tensors:
            self.fixed_labels = tensors["fixed_labels"]
        self.step = int(meta["training"]["step"])
        self.elapsed = float(meta["training"].get("wall_time_s", 0.0))
        self.cpu_time = float(meta["training"].get("cpu_time_s", 0.0))
        self.best = meta.get("best")
        return True

    def record_resume(self) -> None:
        """Drop metrics records past the loaded checkpoint's step and log the resume (rank 0)."""
        if self.dist.is_main:
            truncate_metrics(self.run.metrics_path, after_step=self.step)
            self.run.log(f"resumed from step {self.step}")

    def tensors(self, *, with_optimizer: bool) -> tuple[dict, dict]:
        tensors: dict[str, torch.Tensor] = {}
        for name, net in self.nets.items():
            tensors.update(prefixed(name, net.state_dict()))
        for name, net in self.ema.items():
            tensors.update(prefixed(f"{name}_ema", net.state_dict()))
        opt_meta = {}
        if with_optimizer:
            for name, opt in self.opts.items():
                t, meta = flatten_optimizer(f"opt_{name}", opt)
                tensors.update(t)
                opt_meta[f"opt_{name}"] = meta
        tensors["fixed_z"] = self.fixed_z
        if self.fixed_labels is not None:
            tensors["fixed_labels"] = self.fixed_labels
        return tensors, opt_meta

    def card(self, *, with_optimizer: bool) -> tuple[dict, dict]:
        tensors, opt_meta = self.tensors(with_optimizer=with_optimizer)
        t = self.cfg.train
        kimg = self.step * t.batch_size / 1000
        meta = {
            "kind": "gan",
            "arch": self.model["arch"],
            "model": self.model,
            "data": self.data.description(),
            "config": self.config_dict(),
            "training": {
                "step": self.step,
                "kimg": kimg,
                "epochs": self.step / self.kind.steps_per_epoch(),
                "wall_time_s": self.elapsed,
                "cpu_time_s": self.cpu_time,
                "images_per_s": (self.step * t.batch_size / self.elapsed) if self.elapsed else None,
                "device": str(self.device) if self.device.type != "cuda" else torch.cuda.get_device_name(self.device),
                "cpu": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "galaxy_core": galaxy_core.__version__,
                "git_commit": self.git_commit,
                "seed": t.seed,
                "run": str(self.run.root),
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "world_size": self.dist.world_size,
            },
            "engine": {
                "lr_scale": self.lr_scale,
                "augment": self.diffaug.state_dict(),
                "objective": self.objective.state_dict(),
                "frozen": {k: len(v) for k, v in self.frozen.items()},
                "init": self.init_record,
                # absolute: the card may be read from another folder; the id pins the very file
                "references": {role: {"path": str(Path(p.path).resolve()), "sha": p.id}
                               for role, p in self.refs.items()},
            },
            # only what was measured on these weights; the best snapshot is named separately
            "metrics": dict(self.last_eval[1]) if self.last_eval and self.last_eval[0] == self.step else {},
            "best": self.best,
        }
        if with_optimizer:
            meta["optimizer"] = opt_meta
        return tensors, meta

    def config_dict(self) -> dict:
        """The resolved config as written to the run folder, with the distributed layout."""
        d = self.cfg.to_dict()
        d["model"] = self.model
        if self.dist.enabled:
            d["distributed"] = {"world_size": self.dist.world_size, "per_rank_batch": self.local_batch,
                                "effective_batch": self.cfg.train.batch_size,
                                **{f"lr_{k}": self.family.base_lr(k, self.cfg.train) for k in self.opts}}
        return d

    def save(self, name: str) -> None:
        """Write checkpoint ``name`` (rank 0). Every rank calls ``save("last")`` together: it
        first gathers the ranks' ADA sign sums onto rank 0, whose checkpoint a resume reads."""
        if name == "last" and self.dist.enabled:
            self.diffaug.gather(self.dist.all_reduce_sum, keep=self.dist.is_main)
        if not self.dist.is_main:
            return
        tensors, meta = self.card(with_optimizer=True)
        bad = nonfinite_tensors(tensors)
        if bad:
            raise TrainingDiverged(f"weights became non-finite by step {self.step} ({len(bad)} tensors, e.g. {bad[0]}); "
                                   f"{name} was not written, the previous one is kept")
        try:
            save_checkpoint(self.run.checkpoints_dir / name, tensors, meta)
        except OSError as e:  # disk full, file-size limit, read-only folder, ...
            raise GalaxyGanError(f"{self.run.checkpoints_dir / name}.*: could not write the checkpoint at step "
                                 f"{self.step} ({e.strerror or e}); free some space and resume with --resume "
                                 f"{self.run.root}: the previous checkpoint is kept and loads") from e

    # work --------------------------------------------------------------------------------
    def set_lr(self) -> dict[str, float]:
        spe = self.kind.steps_per_epoch()
        out = {}
        for name, opt in self.opts.items():
            lr = learning_rate(self.family.base_lr(name, self.cfg.train), self.step, self.cfg, spe) * self.lr_scale
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_mult", 1.0)
            out[name] = lr
        return out

    def train_step(self) -> dict[str, torch.Tensor]:
        t, dev = self.cfg.train, self.device
        # Layers that draw from torch's global generator rather than the step's (nn.Dropout,
        # a family's own torch.rand_like) get numbers fixed by (seed, step, rank) as well, so a
        # resumed run repeats them without the generator's state in the checkpoint. Seeds
        # every device's generator; families that draw nothing from it are unaffected.
        torch.manual_seed(_step_seed(t.seed, self.step, GLOBAL_STREAM + self.dist.rank))
        gen = _step_generator(t.seed, self.step, 0)
        batch = {k: v.to(dev, non_blocking=True) for k, v in self.kind.batch(self.step, gen).items()}
        aug_gen = _step_generator(t.seed, self.step, 1 + self.dist.rank)
        ctx = StepContext(step=self.step, batch_size=self.local_batch, device=dev, generator=gen,
                          model_cfg=self.model_cfg, family=self.family,
                          augment=lambda x: self.diffaug(x, aug_gen), observe=self.diffaug.observe, amp=self.amp)
        if self.dist.enabled:  # every rank draws the global batch's latents and keeps its slice
            ctx.sample_latents = lambda n: self._rank_slice(
                self.family.sample_latents(self.model_cfg, n * self.dist.world_size, generator=gen)).to(dev)
        self.objective.begin_step(batch, ctx)
        stats: dict[str, torch.Tensor] = {}
        for phase in self.objective.phases:
            if self.step % phase.every:
                continue
            opt = self.opts[phase.optimizer]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
                loss, out = self.objective.run(phase.name, batch, ctx)
            if loss is not None:
                loss.backward()
                opt.step()
            stats.update(out)
        for name, net in self.ema.items():
            if t.ema_beta > 0:
                update_ema(net, self.nets[name], ema_beta_at(t.ema_beta, self.step))
            else:
                net.load_state_dict(self.nets[name].state_dict())
            self.dist.broadcast_buffers(net)  # EMA copies stay identical on every rank
        return stats

    def _load_data(self, cfg, progress):
        """The training data. Under torchrun rank 0 prepares it (minutes for a new folder or the
        simulated set) while the other ranks wait, then they open what it cached instead of
        preparing the same data again; if rank 0 fails, every rank stops with it."""
        def load():
            return load_dataset(cfg.data.dataset, resolution=cfg.data.resolution, crop=cfg.data.crop,
                                count=cfg.data.count, seed=cfg.data.seed, normalisation=cfg.data.normalisation,
                                neighbours=cfg.data.neighbours, progress=progress and self.dist.is_main)

        if not self.dist.enabled:
            return load()
        data, error = None, None
        if self.dist.is_main:
            try:
                data = load()
            except Exception as e:  # noqa: BLE001 (raised again below, once the other ranks know)
                error = e
        self.dist.barrier()
        if self.dist.any(error is not None):
            if error is not None:
                raise error
            raise GalaxyGanError(f"rank {self.dist.rank}: rank 0 could not prepare the training data; its error says why")
        return data if data is not None else load()

    def _rank_slice(self, x: torch.Tensor) -> torch.Tensor:
        per = len(x) // self.dist.world_size
        return x[self.dist.rank * per : (self.dist.rank + 1) * per]

    def generate(self, latents: torch.Tensor, labels: torch.Tensor | None = None):
        nets = self.sampling_nets()
        latents = latents.to(self.device)
        labels = labels.to(self.device) if labels is not None else None
        return self.family.generate(nets, latents, labels=labels, refs=self.refs)

    @torch.no_grad()
    def sample_grid(self) -> Path | None:
        if not self.dist.is_main:
            return None
        rgb = self.kind.render(self.generate(self.fixed_z, self.fixed_labels))
        path = self.run.samples_dir / f"step_{self.step:07d}.png"
        from galaxy_core.io.render import save_png

        save_png(path, rgb, scale=2 if self.data.resolution <= 32 else 1)
        return path

    def evaluate(self) -> dict | None:
        if self.evaluator is None:
            return None
        k = self.family.num_classes(self.model_cfg)

        def G(z):  # final images of the sampling networks, labels cycling through the classes
            labels = torch.arange(len(z)) % k if k else None
            return self.kind.images(self.generate(z, labels))

        rec = self.evaluator(G, lambda n, g: self.family.sample_latents(self.model_cfg, n, generator=g))
        value = rec[self.evaluator.name]
        self.last_eval = (self.step, rec)
        if self.best is None or value < self.best["value"]:
            self.best = {"metric": self.evaluator.name, "value": value, "step": self.step, "metrics": rec}
            self.save("best")
        return rec


def _with_absolute_dataset(d: dict) -> dict:
    """The run's config with a dataset folder given relative to the working directory made
    absolute, so that ``--resume`` finds it from any directory (built-in names stay names)."""
    spec = str(d.get("data", {}).get("dataset", ""))
    p = Path(spec).expanduser()
    if spec and spec not in BUILTIN and not p.is_absolute() and p.exists():
        d = {**d, "data": {**d["data"], "dataset": str(p.resolve())}}
    return d


class RunRefused(GalaxyGanError):
    """The run folder cannot take this run; nothing in it was changed."""


# what the app's launcher writes into a run folder before the training process starts
_LAUNCHER_FILES = {"process.log", "config.toml"}


def _refuse_foreign_folder(run: RunFolder) -> None:
    """RunRefused where ``run.root`` is a file, or a folder holding files no run of this project
    wrote (a user's folder with its own config.toml or notes): training writes config.toml,
    status.json, log.txt and metrics.jsonl there and would replace or mix with them. A run's
    own folder (its status.json), an empty folder or one the launcher has just prepared
    (process.log + config.toml) is fine."""
    root = run.root
    if root.exists() and not root.is_dir():
        raise RunRefused(f"{root}: is a file, not a run folder; give a new --name / --run-dir")
    if not root.is_dir():
        return
    try:
        status = json.loads(run.status_path.read_text())
    except (OSError, ValueError):
        status = None
    if isinstance(status, dict) and status.get("state") in STATES and "heartbeat" in status:
        return  # a run of this project (starting, or failed before its first checkpoint)
    names = {p.name for p in root.iterdir()} - {run.lock_path.name}
    if "process.log" in names:
        names -= _LAUNCHER_FILES
    if names:
        shown = ", ".join(sorted(names)[:4]) + (", ..." if len(names) > 4 else "")
        raise RunRefused(f"{root}: holds files that no run wrote ({shown}); training would write config.toml, "
                         "status.json, log.txt and metrics.jsonl there: give a new --name / --run-dir or an empty folder")


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    resume: bool = True,
    init_from: str | None = None,
    progress_fn: ProgressFn | None = None,
    abort_fn: AbortFn | None = None,
    progress: bool = True,
    force_data: bool = False,
) -> dict:
    """Train a model of any registered family as configured, writing everything into ``run_dir``.

    Every check (config against the run's checkpoint, dataset identity, weights to initialise
    from) happens before anything is written, so a refused run leaves an existing run folder
    byte for byte unchanged.

    Parameters
    ----------
    cfg : Config
        A validated configuration (see :mod:`galaxy_core.config`).
    run_dir : path
        The run folder; created if needed. With ``resume`` and an existing ``last`` checkpoint
        the run continues from it.
    resume : bool
        Continue from ``last`` when the folder has one. Without it, a folder that already holds
        checkpoints is refused.
    init_from : path, optional
        Checkpoint whose matching tensors initialise a new run (fine-tuning; see
        :mod:`galaxy_core.train.finetune`). A resumed run takes its weights from ``last``;
        ``init_from`` must then be the checkpoint it started from, whose record
        (``engine.init``) every later card keeps.
    progress_fn, abort_fn : callables, optional
        See module docstring.
    progress : bool
        Show dataset-preparation progress bars.
    force_data : bool
        Resume even when the dataset differs from the one the run was trained on.

    Returns
    -------
    dict
        The final status record (rank 0's under torchrun).

    Raises
    ------
    RunRefused
        The folder holds another run (without ``resume``), the dataset changed, or
        ``init_from`` is not the checkpoint the resumed run started from.
    CheckpointError
        The config's model differs from the run's checkpoint, or a checkpoint the model runs
        after (a StackGAN's stage I) is no longer the one the run was trained with.
    ConfigError
        The config freezes other layers than the run's checkpoint was trained with.
    TrainingDiverged
        A loss became non-finite (``train.on_nonfinite = "fail"``) or weights did at a save.
    """
    dist = distributed.setup(cfg.train.device)
    run = RunFolder(run_dir)
    has_run = run.checkpoint("last").exists()
    if has_run and not resume:
        raise RunRefused(f"{run.root}: already holds a run (checkpoints/last.json); continue it with --resume "
                         f"{run.root}, or give a new --name / --run-dir")
    if not has_run:
        _refuse_foreign_folder(run)
    if has_run and init_from is not None:
        _check_same_init(run, init_from)
        init_from = None  # the weights come from last; its card keeps the record of the start
    if str(cfg.data.dataset) not in BUILTIN:
        require_dataset(cfg.data.dataset)  # before a run folder is made for data that is not there
    fresh = not run.status_path.exists()
    # Under torchrun every rank has now checked the folder as it was; only then may rank 0 write
    # to it (a rank still checking would take rank 0's new checkpoints/ for someone else's files).
    dist.barrier()
    # One writer per run folder: rank 0 holds the OS lock for the run's whole life; a second
    # writer is refused here, before it writes anything (the lock file records the holder).
    held = run.acquire_lock() if dist.is_main else None
    if held is not None and held.previous and "released" not in held.previous:
        run.log(f"the previous writer (pid {held.previous.get('pid')}) ended without releasing the run; continuing")
    if fresh and dist.is_main:  # a new folder: say at once that the run is starting (data may take minutes)
        run.create()
        run.write_status("starting", step=0, total=cfg.train.steps, message="preparing data")
    dist.barrier()
    started = False
    try:
        trainer = Trainer(cfg, run, init_from=init_from, progress=progress, dist=dist)
        if has_run:
            _check_same_data(trainer, force_data=force_data)
        resumed = resume and trainer.resume()
        if resume and not resumed:  # nothing saved to resume from: say so, and keep no records of the lost steps
            trainer.notices.append(f"{run.checkpoint('last')}: no checkpoint to resume from; the run starts again "
                                   "at step 0 (its earlier metrics records are dropped)")
        if resumed and trainer.step >= cfg.train.steps:
            dist.barrier()
            return run.read_status() or {"state": "finished", "step": trainer.step}  # nothing to do, nothing written
        started = True
        if dist.is_main:
            run.create()
            if resumed:
                trainer.record_resume()
            elif resume and run.metrics_path.exists():
                truncate_metrics(run.metrics_path, after_step=0)
            for notice in trainer.notices:
                run.log(f"warning: {notice}")
            if trainer.notices:
                run.write_status("starting", warnings=trainer.notices)
            if trainer.init_report is not None:
                run.log(trainer.init_report.summary())
                run.write_status("starting", init=trainer.init_report.to_dict())
            atomic_write_text(run.config_path, _config_text(_with_absolute_dataset(trainer.config_dict())))
            with atomic_open(run.samples_dir / "fixed_z.npy") as f:
                np.save(f, trainer.fixed_z.numpy())
        dist.barrier()
        return _loop(trainer, progress_fn, abort_fn, resumed)
    except Exception as e:
        if dist.is_main and (started or fresh):
            run.write_status("failed", message=f"{type(e).__name__}: {e}")
            run.log(f"failed: {type(e).__name__}: {e}")
        raise
    finally:
        if held is not None:
            held.release()
        distributed.teardown(dist)


def _check_same_init(run: RunFolder, init_from: str) -> None:
    """Refuse ``init_from`` for a run that did not start from that checkpoint (its id, as
    recorded in ``last``); resuming takes the weights from ``last`` either way."""
    from galaxy_core.io.checkpoint import read_meta

    last = run.checkpoint("last")
    record = (read_meta(last).get("engine") or {}).get("init")
    given = checkpoint_id(init_from)
    if not record:
        raise RunRefused(f"{run.root}: the run started from scratch, not from {init_from} (id {given}); --init starts "
                         "a new run: give a new --name / --run-dir, or resume without it")
    if record.get("sha") != given:
        raise RunRefused(f"{run.root}: the run started from {record.get('source')} (id {record.get('sha')}), not from "
                         f"{init_from} (id {given}); resume it without --init, or start a new run from {init_from}")


def _check_same_data(tr: Trainer, *, force_data: bool) -> None:
    from galaxy_core.io.checkpoint import read_meta

    before = read_meta(tr.run.checkpoint("last")).get("data", {})
    now = tr.data.description()
    if before.get("key") and before.get("key") != now.get("key") and not force_data:
        raise RunRefused(f"{tr.run.root}: the run was trained on {before.get('name')} ({before.get('key')}) but the config "
                         f"now gives {now.get('name')} ({now.get('key')}); resume with the same data, or pass "
                         "--force-data to continue on the new data")


def _config_text(d: dict) -> str:
    """The run's config.toml: the resolved config, and the torchrun layout as comments."""
    text = to_toml(d)
    if "distributed" in d:
        text += "# torchrun: the batch is the global batch, split between the processes\n"
        text += "".join(f"# {k} = {v}\n" for k, v in d["distributed"].items())
    return text


def _loop(tr: Trainer, progress_fn: ProgressFn | None, abort_fn: AbortFn | None, resumed: bool) -> dict:
    cfg, run, main = tr.cfg, tr.run, tr.dist.is_main
    total, lg = cfg.train.steps, cfg.log
    if main:
        run.write_status("running", step=tr.step, total=total, message="resumed" if resumed else "training")
        run.log(f"{'resuming' if resumed else 'starting'} at step {tr.step} of {total} on {tr.device}; "
                f"{len(tr.data)} images from {tr.data.name}"
                + (f"; {tr.dist.world_size} processes" if tr.dist.enabled else ""))
    if not resumed:
        tr.sample_grid()
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    n_acc, t_mark, c_mark = 0, time.perf_counter(), time.process_time()
    imgs_since = 0
    state = "finished"
    while tr.step < total:
        stop = abort_fn is not None and abort_fn()
        if tr.dist.any(stop):
            state = "stopped"
            break
        lrs = tr.set_lr()
        out = tr.train_step()
        try:
            _check_finite(tr, out)
        except TrainingDiverged as e:
            if not _roll_back(tr, e):
                raise
            sums, counts, n_acc, imgs_since = {}, {}, 0, 0
            t_mark, c_mark = time.perf_counter(), time.process_time()
            continue
        tr.step += 1
        tr.diffaug.update(step=tr.step, images_per_step=cfg.train.batch_size,
                          all_reduce=tr.dist.all_reduce_sum if tr.dist.enabled else None)
        for k, v in out.items():
            sums[k] = sums.get(k, 0) + v
            counts[k] = counts.get(k, 0) + 1
        n_acc += 1
        imgs_since += cfg.train.batch_size
        evaluate_now = bool(lg.eval_every) and (tr.step % lg.eval_every == 0 or tr.step == total)
        if tr.step % lg.metrics_every == 0 or tr.step == total or evaluate_now:  # an evaluation step is never skipped
            now = time.perf_counter()
            dt = now - t_mark
            tr.elapsed += dt
            tr.cpu_time += time.process_time() - c_mark
            rec = {"step": tr.step, "kimg": tr.step * cfg.train.batch_size / 1000,
                   "epoch": tr.step / tr.kind.steps_per_epoch(),
                   **{k: float(v) / counts[k] for k, v in sums.items()},
                   **{f"lr_{k}": v for k, v in lrs.items()},
                   "images_per_s": imgs_since / dt if dt > 0 else None,
                   "cpu_s": tr.cpu_time,
                   "time": time.time()}
            if tr.diffaug.mode != "off":
                rec["augment_p"] = tr.diffaug.p
                if tr.diffaug.r_t is not None:
                    rec["ada_rt"] = tr.diffaug.r_t
            if evaluate_now:
                rec.update(tr.evaluate() or {})
            if main:
                run.append_metrics(rec)
                run.write_status("running", step=tr.step, total=total, message="training")
                if progress_fn is not None:
                    progress_fn(tr.step, total, rec)
            sums, counts, n_acc, imgs_since = {}, {}, 0, 0
            t_mark, c_mark = time.perf_counter(), time.process_time()
        if tr.step % lg.sample_every == 0:
            tr.sample_grid()
        if tr.step % lg.checkpoint_every == 0 and tr.step < total:
            tr.save("last")
    tr.elapsed += time.perf_counter() - t_mark if n_acc else 0.0
    tr.cpu_time += time.process_time() - c_mark if n_acc else 0.0
    if tr.step % lg.sample_every != 0:
        tr.sample_grid()
    tr.save("last")
    if tr.dist.enabled:
        _record_rank_agreement(tr)
    if not main:
        return {"state": state, "step": tr.step}
    run.write_status(state, step=tr.step, total=total, message=f"{state} at step {tr.step}")
    run.log(f"{state} at step {tr.step}")
    return run.read_status()


def _statistics_tensor(stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """(n,) float32 of the scalar statistics of a step, on the device of the first, so that
    reading them back costs one transfer; a statistic an objective made on the CPU beside
    losses on an accelerator is moved there."""
    device = next(iter(stats.values())).device
    return torch.stack([v.detach().float().reshape(()).to(device) for v in stats.values()])


def _check_finite(tr: Trainer, stats: dict[str, torch.Tensor]) -> None:
    if not stats:
        return
    if bool(torch.isfinite(_statistics_tensor(stats)).all()):
        return
    bad = ", ".join(f"{k}={float(v):g}" for k, v in stats.items() if not math.isfinite(float(v)))
    raise TrainingDiverged(f"loss became non-finite at step {tr.step + 1} ({bad}); the last good checkpoint is kept. "
                           "Lower train.lr_g / train.lr_d, or resume with a smaller learning rate")


MAX_ROLLBACKS = 3


def _roll_back(tr: Trainer, error: TrainingDiverged) -> bool:
    """With ``train.on_nonfinite = "rollback"``: reload ``last``, halve the learning rates and
    carry on; returns False when the run must fail instead (no checkpoint, or too many tries)."""
    last = tr.run.checkpoint("last")
    if tr.cfg.train.on_nonfinite != "rollback" or tr.rollbacks >= MAX_ROLLBACKS or not last.exists():
        return False
    bad_step, scale = tr.step + 1, tr.lr_scale
    tr.resume()  # restores the checkpoint's own lr_scale; this rollback halves the current one
    tr.record_resume()
    tr.rollbacks += 1
    tr.lr_scale = scale * 0.5
    message = (f"{error}; rolled back to step {tr.step} with learning rates x{tr.lr_scale:g} "
               f"(rollback {tr.rollbacks} of {MAX_ROLLBACKS})")
    if tr.dist.is_main:
        tr.run.log(message)
        tr.run.write_status("running", step=tr.step, total=tr.cfg.train.steps, message=message,
                            rollbacks=tr.rollbacks, diverged_at=bad_step)
    return True


def _record_rank_agreement(tr: Trainer) -> None:
    """Log a checksum of every rank's sampling generator, so a drift between ranks is visible."""
    net = tr.sampling_nets()[tr.family.sampler]
    checksum = float(sum(p.double().sum() for p in net.state_dict().values() if p.is_floating_point()))
    sums = tr.dist.all_gather_float(checksum)
    if tr.dist.is_main:
        tr.run.log(f"rank checksums of {tr.family.sampler}: {sums}")
        status = tr.run.read_status() or {}
        tr.run.write_status(status.get("state", "running"), rank_checksums=sums)
