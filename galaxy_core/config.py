"""Training configuration: data files (TOML or YAML) with every default visible.

A config has five tables. Each is a dataclass below whose defaults are the documented defaults;
``model`` is validated by the architecture's own config class (see
:mod:`galaxy_core.models.registry`). Unknown keys and impossible values raise
:class:`~galaxy_core.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from galaxy_core.errors import ConfigError


@dataclass
class DataConfig:
    dataset: str = "hdf"          # "hdf", "sim", or a path to a folder / FITS file
    resolution: int = 64          # side in pixels: 32, 64, 128 (256 for data only)
    crop: float = 1.0             # centre-crop fraction before resizing, (0, 1]
    count: int = 10000            # sim only: number of simulated galaxies
    seed: int = 0                 # sim only: simulation seed
    normalisation: str = "asinh"  # physical data: "asinh" (invertible) or "minmax" (not flux-preserving)


@dataclass
class AugmentConfig:
    flip_h: bool = True           # random horizontal flip
    flip_v: bool = True           # random vertical flip
    rot90: bool = True            # random multiple of 90 degrees
    rotate: str = "none"          # extra rotation: "none", "45" (45-degree steps) or "any"
    rotate_fill: str = "reflect"  # fill for rotated corners: "reflect" or "constant"
    hue_p: float = 0.0            # probability of a random hue shift (RGB only; 0.25 in Lightweight GAN)
    diff: str = "off"             # differentiable augmentation of real and generated images: "off", "fixed", "ada"
    diff_p: float = 0.0           # its probability per operation (fixed), or the start value (ada)
    diff_policy: str = "auto"     # "auto" (rgb: translation,cutout,color; bands: flip,rot90,shift,noise) or a list
    ada_target: float = 0.6       # ada: target of r_t = E[sign(D(real))]
    ada_interval: int = 4         # ada: steps between updates of p
    ada_kimg: float = 100.0       # ada: thousands of images for p to move by 1


@dataclass
class TrainConfig:
    steps: int = 2000             # generator updates in total
    batch_size: int = 32
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "bce"             # "bce" (non-saturating) or "hinge"
    label_smoothing: float = 0.0  # one-sided: real targets are 1 - label_smoothing
    lr_step_every: float = 0.0    # decay period (0 = constant lr)
    lr_step_unit: str = "epoch"   # "epoch" or "step"
    lr_gamma: float = 0.5         # lr factor per period (the StackGAN stage halves every 80 epochs)
    ema_beta: float = 0.999       # generator EMA decay per step (0 disables EMA)
    seed: int = 0                 # seed of initialisation, batches and latents
    device: str = "auto"          # "auto", "cpu", "cuda", "cuda:1", "mps"
    amp: bool = True              # mixed precision (CUDA only)
    channels_last: bool = True    # channels_last memory format (CUDA only)
    threads: int = 0              # CPU threads for torch (0 = torch default)
    freeze_g: int = 0             # fine-tuning: freeze the first K generator layers or blocks
    freeze_unit: str = "layer"    # what freeze_g counts: "layer" or "block"
    freeze_d: int = 0             # fine-tuning: freeze the first K discriminator blocks (FreezeD)
    on_nonfinite: str = "fail"    # a non-finite loss: "fail" (stop, state failed) or "rollback" (last good checkpoint, lr halved)


@dataclass
class LogConfig:
    metrics_every: int = 10       # steps between metric records
    sample_every: int = 200       # steps between fixed-latent sample grids
    checkpoint_every: int = 500   # steps between `last` checkpoints
    eval_every: int = 500         # steps between live quality evaluations (0 = off)
    eval_samples: int = 256       # generated samples per live evaluation
    eval_extractor: str = "auto"  # features for live FID/KID: "auto" (galaxy encoder), "galaxy", "inception", "pix8"
    grid_size: int = 36           # images in each sample grid (a square number)


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "log": LogConfig,
}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: dict = field(default_factory=lambda: {"arch": "dcgan"})
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def arch(self) -> str:
        return self.model.get("arch", "dcgan")

    def model_values(self) -> dict:
        """Model hyper-parameters without ``arch``."""
        return {k: v for k, v in self.model.items() if k != "arch"}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = dict(self.model)
        return d


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from e
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as e:  # parse errors of either format
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper() or 'TOML'}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a table of sections")
    return data


def parse_override(item: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is read as TOML (so ``1e-4``, ``true``, ``[1, 2]``)."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.steps=500")
    dotted, raw = item.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string such as a path
    return section, key, value


def from_dict(data: dict, *, source: str = "config") -> Config:
    """Validate a nested dict into a :class:`Config`, naming unknown keys and bad types."""
    data = copy.deepcopy(data)
    unknown = sorted(set(data) - set(SECTIONS) - {"model"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; known: data, augment, model, train, log")
    kwargs: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = data.get(name, {}) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"{source}: unknown key {name}.{key}; known: {', '.join(fields)}")
            values[key] = _coerce(value, fields[key], f"{source}: {name}.{key}")
        kwargs[name] = cls(**values)
    model = dict(data.get("model", {}) or {})
    model.setdefault("arch", "dcgan")
    cfg = Config(model=model, **kwargs)
    validate(cfg, source=source)
    return cfg


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    want = type(f.default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if want in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if want is int and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if want is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {msg}")


def validate(cfg: Config, *, source: str = "config") -> None:
    """Check values are possible; also validates ``model`` against its architecture."""
    from galaxy_core.models.registry import make_config

    d, a, t, lg = cfg.data, cfg.augment, cfg.train, cfg.log
    _check(d.resolution in (32, 64, 128, 256), f"{source}: data.resolution", f"must be 32, 64, 128 or 256, got {d.resolution}")
    _check(0 < d.crop <= 1, f"{source}: data.crop", f"must be in (0, 1], got {d.crop}")
    _check(d.count > 0, f"{source}: data.count", "must be positive")
    _check(d.normalisation in ("asinh", "minmax"), f"{source}: data.normalisation", "must be 'asinh' or 'minmax'")
    _check(a.rotate in ("none", "45", "any"), f"{source}: augment.rotate", "must be 'none', '45' or 'any'")
    _check(a.rotate_fill in ("reflect", "constant"), f"{source}: augment.rotate_fill", "must be 'reflect' or 'constant'")
    _check(0 <= a.hue_p <= 1, f"{source}: augment.hue_p", "must be in [0, 1]")
    _check(a.diff in ("off", "fixed", "ada"), f"{source}: augment.diff", f"must be 'off', 'fixed' or 'ada', got {a.diff!r}")
    _check(0 <= a.diff_p <= 1, f"{source}: augment.diff_p", "must be in [0, 1]")
    _check(0 < a.ada_target < 1, f"{source}: augment.ada_target", "must be in (0, 1)")
    _check(a.ada_interval > 0 and a.ada_kimg > 0, f"{source}: augment.ada_interval/ada_kimg", "must be positive")
    _check(t.steps > 0, f"{source}: train.steps", "must be positive")
    _check(t.batch_size > 0, f"{source}: train.batch_size", "must be positive")
    _check(t.lr_g > 0 and t.lr_d > 0, f"{source}: train.lr_g/lr_d", "learning rates must be positive")
    _check(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, f"{source}: train.beta1/beta2", "must be in [0, 1)")
    _check(t.loss in ("bce", "hinge"), f"{source}: train.loss", f"must be 'bce' or 'hinge', got {t.loss!r}")
    _check(0 <= t.label_smoothing < 0.5, f"{source}: train.label_smoothing", "must be in [0, 0.5)")
    _check(t.lr_step_every >= 0, f"{source}: train.lr_step_every", "must be >= 0")
    _check(t.lr_step_unit in ("epoch", "step"), f"{source}: train.lr_step_unit", "must be 'epoch' or 'step'")
    _check(0 < t.lr_gamma <= 1, f"{source}: train.lr_gamma", "must be in (0, 1]")
    _check(0 <= t.ema_beta < 1, f"{source}: train.ema_beta", "must be in [0, 1)")
    _check(t.freeze_g >= 0 and t.freeze_d >= 0, f"{source}: train.freeze_g/freeze_d", "must be >= 0")
    _check(t.freeze_unit in ("layer", "block"), f"{source}: train.freeze_unit", "must be 'layer' or 'block'")
    _check(t.on_nonfinite in ("fail", "rollback"), f"{source}: train.on_nonfinite", "must be 'fail' or 'rollback'")
    for k in ("metrics_every", "sample_every", "checkpoint_every", "grid_size"):
        _check(getattr(lg, k) > 0, f"{source}: log.{k}", "must be positive")
    _check(lg.eval_every >= 0 and lg.eval_samples > 1, f"{source}: log.eval_every/eval_samples", "invalid")
    _check(lg.eval_extractor in ("auto", "galaxy", "inception", "pix8"), f"{source}: log.eval_extractor",
           "must be 'auto', 'galaxy', 'inception' or 'pix8'")
    _check(int(lg.grid_size**0.5) ** 2 == lg.grid_size, f"{source}: log.grid_size", "must be a square number")
    model = cfg.model_values()
    from galaxy_core.models.registry import get_arch

    if "resolution" in {f.name for f in dataclasses.fields(get_arch(cfg.arch).config_cls)}:
        model.setdefault("resolution", d.resolution)
    try:
        make_config(cfg.arch, model)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Read a config file (TOML or YAML), apply ``section.key=value`` overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        data = _read_file(p)
        source = str(p)
    for item in overrides:
        section, key, value = parse_override(item)
        data.setdefault(section, {})[key] = value
    return from_dict(data, source=source)


def to_toml(cfg: Config | dict) -> str:
    """Write a config as TOML with every value visible (no comments)."""
    d = cfg.to_dict() if isinstance(cfg, Config) else cfg
    lines = []
    for section in ("data", "augment", "model", "train", "log"):
        if section not in d:
            continue
        lines.append(f"[{section}]")
        for k, v in d[section].items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))
