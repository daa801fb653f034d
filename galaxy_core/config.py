"""Training configuration: data files (TOML or YAML) with every default visible.

A config has five tables. Four are dataclasses below, and they are the one schema: each field's
annotation is its type, its default the documented default, and its metadata (see
:func:`option`) the allowed choices or range. ``model`` belongs to the architecture and is typed
and checked by that family's own config dataclass (see :mod:`galaxy_core.models.registry`).

Values from a file keep their file type where it fits the field (an integer is accepted for a
float, a number for a choice written as a number such as ``rotate = 45``); ``--set`` values are
text and are parsed to the field's declared type. Every error is a
:class:`~galaxy_core.errors.ConfigError` that names the file (or ``--set``), the key, what was
wrong and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import tomllib
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from galaxy_core.errors import ConfigError


MAX_SEED = 2**63 - 1  # the largest seed every random generator used here takes (torch's, numpy's)


def positive_arg(kind=int):
    """argparse type of an option that must be > 0 (``int`` or ``float``)."""
    import argparse

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def seed_arg(text: str) -> int:
    """argparse type of a ``--seed`` option: an integer in ``[0, MAX_SEED]``."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must lie in 0 .. 2**63 - 1, got {value}")
    return value


def option(default: Any, *, choices: tuple = (), low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> Any:
    """A config field with its allowed values.

    Parameters
    ----------
    default : bool, int, float or str
        The documented default; the field's annotation gives its type.
    choices : tuple of str, optional
        The only values allowed (for strings).
    low, high : float, optional
        Bounds of the allowed range; inclusive unless ``low_open`` / ``high_open``.
    """
    meta = {"choices": tuple(choices), "low": low, "high": high, "low_open": low_open, "high_open": high_open}
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    dataset: str = "hdf"          # "hdf", "sim", or a path to a folder / FITS file
    resolution: int = option(64, choices=(32, 64, 128, 256))  # side in pixels (256 for data only)
    crop: float = option(1.0, low=0.0, high=1.0, low_open=True)  # centre-crop fraction before resizing
    count: int = option(10000, low=1)        # sim: number of simulated galaxies (sky grids: number of tiles)
    seed: int = option(0, low=0, high=MAX_SEED)  # sim: simulation seed (sky grids: seed of the tiles)
    # physical data: "asinh" (invertible) or "minmax" (per image, not flux-preserving)
    normalisation: str = option("asinh", choices=("asinh", "minmax"))
    # hdf only: "keep" the field around each source, or replace other sources with source-free "sky"
    neighbours: str = option("keep", choices=("keep", "sky"))


def dataset_specific_keys(data: DataConfig) -> dict[str, str]:
    """The ``[data]`` keys that mean nothing for ``data.dataset``, each with the reason.

    ``count`` and ``seed`` apply to the built-in ``sim`` and the sky grid datasets
    (``hdf_grid``, ``hdf_grid_classes``) only; ``neighbours`` to the built-in ``hdf`` only.
    ``normalisation`` depends on the files, so it is decided where the data are known.
    """
    out = {}
    if data.dataset != "sim" and not data.dataset.startswith("hdf_grid"):
        reason = "data.count and data.seed apply to the built-in sim and the sky grids only"
        out.update(count=reason, seed=reason)
    if data.dataset != "hdf":
        out["neighbours"] = "data.neighbours applies to the built-in hdf only"
    return out


@dataclass
class AugmentConfig:
    flip_h: bool = True           # random horizontal flip
    flip_v: bool = True           # random vertical flip
    rot90: bool = True            # random multiple of 90 degrees
    # extra rotation: 45-degree steps or any angle (images only: refused for grids of cell classes)
    rotate: str = option("none", choices=("none", "45", "any"))
    rotate_fill: str = option("reflect", choices=("reflect", "constant"))  # fill for rotated corners
    # probability of a random hue shift (RGB only; 0.25 in Lightweight GAN)
    hue_p: float = option(0.0, low=0.0, high=1.0)
    # differentiable augmentation of real and generated images before D: "off", "fixed" or "ada" (adaptive p)
    diff: str = option("off", choices=("off", "fixed", "ada"))
    diff_p: float = option(0.0, low=0.0, high=1.0)  # probability per operation (fixed), or the start value (ada)
    # "auto" (rgb: translation,cutout,color; bands: flip,rot90,shift,noise; cell grids: flip,rot90,translation),
    # "rgb", "bands" or a list
    diff_policy: str = "auto"
    ada_target: float = option(0.6, low=0.0, high=1.0, low_open=True, high_open=True)  # target of E[sign(D(real))]
    ada_interval: int = option(4, low=1)          # ada: steps between updates of p
    ada_kimg: float = option(100.0, low=0.0, low_open=True)  # ada: thousands of images for p to move by 1


@dataclass
class TrainConfig:
    steps: int = option(2000, low=1)         # generator updates in total
    batch_size: int = option(32, low=1)
    lr_g: float = option(2e-4, low=0.0, low_open=True)
    lr_d: float = option(2e-4, low=0.0, low_open=True)
    beta1: float = option(0.5, low=0.0, high=1.0, high_open=True)
    beta2: float = option(0.999, low=0.0, high=1.0, high_open=True)
    loss: str = option("bce", choices=("bce", "hinge"))  # "bce" (non-saturating) or "hinge"
    # one-sided: real targets are 1 - label_smoothing
    label_smoothing: float = option(0.0, low=0.0, high=0.5, high_open=True)
    lr_step_every: float = option(0.0, low=0.0)   # decay period (0 = constant lr)
    lr_step_unit: str = option("epoch", choices=("epoch", "step"))
    # lr factor per period (the StackGAN stage halves every 80 epochs)
    lr_gamma: float = option(0.5, low=0.0, high=1.0, low_open=True)
    # generator EMA decay per step (0 disables EMA)
    ema_beta: float = option(0.999, low=0.0, high=1.0, high_open=True)
    seed: int = option(0, low=0, high=MAX_SEED)   # seed of initialisation, batches and latents
    device: str = "auto"          # "auto", "cpu", "cuda", "cuda:1", "mps" (checked against this machine)
    amp: bool = True              # mixed precision (CUDA only)
    channels_last: bool = True    # channels_last memory format (CUDA only)
    threads: int = option(0, low=0)               # CPU threads for torch (0 = torch default)
    freeze_g: int = option(0, low=0)              # fine-tuning: freeze the first K generator layers or blocks
    freeze_unit: str = option("layer", choices=("layer", "block"))  # what freeze_g counts
    freeze_d: int = option(0, low=0)              # fine-tuning: freeze the first K discriminator blocks (FreezeD)
    # a non-finite loss: "fail" (stop, state failed) or "rollback" (last good checkpoint, learning rates halved)
    on_nonfinite: str = option("fail", choices=("fail", "rollback"))


@dataclass
class LogConfig:
    metrics_every: int = option(10, low=1)        # steps between metric records
    sample_every: int = option(200, low=1)        # steps between fixed-latent sample grids
    checkpoint_every: int = option(500, low=1)    # steps between `last` checkpoints
    eval_every: int = option(500, low=0)          # steps between live quality evaluations (0 = off)
    eval_samples: int = option(256, low=2)        # generated samples per live evaluation
    # features for live FID/KID ("auto": the galaxy encoder)
    eval_extractor: str = option("auto", choices=("auto", "galaxy", "inception", "pix8"))
    grid_size: int = option(36, low=1)            # images in each sample grid (a square number)


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


# ------------------------------------------------------------------------------ reading


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file, so not a TOML or YAML config") from e
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


def parse_override(item: str) -> tuple[str, str, str]:
    """Split ``section.key=value`` into ``(section, key, text)``.

    The text is not interpreted here: :func:`load_config` parses it to the type the schema
    declares for that key, so ``augment.rotate=45`` is the choice ``"45"`` and
    ``train.lr_g=1e-4`` the float ``0.0001``.

    Raises
    ------
    ConfigError
        The item is not of the form ``section.key=value``.
    """
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.steps=500")
    dotted, text = item.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    if not section or not key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.steps=500")
    return section, key.strip(), text.strip()


# ------------------------------------------------------------------------------ typing


def field_types(cls: type) -> dict[str, type]:
    """Declared type of each field of a config dataclass (``bool``, ``int``, ``float``, ``str``, ...).

    The annotation is used where it resolves to a class; otherwise the type of the default.
    """
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # annotations naming something not importable here
        hints = {}
    out = {}
    for f in dataclasses.fields(cls):
        t = hints.get(f.name)
        if not isinstance(t, type):
            t = type(f.default) if f.default is not dataclasses.MISSING else object
        out[f.name] = t
    return out


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_text(text: str, want: type, where: str, *, choices: tuple = ()) -> Any:
    """Parse ``--set`` text to the declared type ``want``.

    Parameters
    ----------
    text : str
        The value as typed, e.g. ``"45"``, ``"1e-4"``, ``"true"``, ``'"my data"'``.
    want : type
        ``bool``, ``int``, ``float`` or ``str``; other types are read as a TOML value.
    where : str
        What to name in an error, e.g. ``"--set train.steps"``.
    choices : tuple, optional
        Allowed values (only used to phrase the error).

    Raises
    ------
    ConfigError
        The text is not a value of that type; the message names ``where``.
    """
    raw = text.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        try:  # a quoted TOML string: the user meant the text inside
            raw = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            pass
    if want is bool:
        low = raw.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    if want is int:
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            pass
        try:
            f = float(raw)
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f.is_integer():
            return int(f)
        raise ConfigError(f"{where}: expected a whole number, got {text!r}")
    if want is float:
        try:
            value = float(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {text!r}")
        return value
    if want is str:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def coerce_value(value: Any, want: type, where: str, *, choices: tuple = ()) -> Any:
    """Check a value read from a file (or given as a Python object) against the declared type.

    An integer is accepted for a float, an integral float for an integer, and a number for a
    string field whose choices are written as numbers (``rotate = 45`` means ``"45"``).

    Raises
    ------
    ConfigError
        The value has the wrong type; the message names ``where``.
    """
    if isinstance(value, str) and want is not str:
        return parse_text(value, want, where, choices=choices)  # e.g. YAML "1e-4" or "64"
    if want is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is int:
        if is_number and float(value).is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected a whole number, got {value!r}")
    if want is float:
        if not is_number:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if want is str:
        if is_number and choices:
            return str(int(value)) if float(value).is_integer() else str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def check_range(value: Any, f: dataclasses.Field, where: str) -> None:
    """Raise :class:`ConfigError` when ``value`` is outside the field's choices or range."""
    m = f.metadata
    choices = m.get("choices") or ()
    if choices and value not in choices:
        allowed = ", ".join(repr(c) if isinstance(c, str) else str(c) for c in choices)
        raise ConfigError(f"{where}: must be one of {allowed}; got {value!r}")
    low, high = m.get("low"), m.get("high")
    if low is None and high is None:
        return
    below = low is not None and (value <= low if m.get("low_open") else value < low)
    above = high is not None and (value >= high if m.get("high_open") else value > high)
    if below or above:
        if high is None:
            rule = f"> {low}" if m.get("low_open") else f">= {low}"
        elif low is None:
            rule = f"< {high}" if m.get("high_open") else f"<= {high}"
        else:
            rule = f"in {'(' if m.get('low_open') else '['}{low}, {high}{')' if m.get('high_open') else ']'}"
        raise ConfigError(f"{where}: must be {rule}; got {value!r}")


# ------------------------------------------------------------------------------ devices


def available_devices() -> list[str]:
    """Values of ``train.device`` this machine can run: ``auto``, ``cpu`` and any GPU found."""
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        out += ["cuda"] + [f"cuda:{i}" for i in range(n)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(name: str, where: str = "train.device") -> None:
    """Raise :class:`ConfigError` unless ``name`` is a device this machine has.

    Raises
    ------
    ConfigError
        Unknown device kind (``tpu``), or a GPU this torch build cannot use; the message names
        ``where`` and lists the available devices.
    """
    known = available_devices()
    if name in known:
        return
    kind = name.split(":", 1)[0]
    if kind == "cuda":
        import torch

        if torch.version.cuda is None:
            why = f"this torch build ({torch.__version__}) has no CUDA support"
        elif not torch.cuda.is_available():
            why = "no CUDA GPU is visible to torch"
        else:
            why = f"only {torch.cuda.device_count()} CUDA GPU(s) are visible"
    elif kind == "mps":
        why = "Apple's MPS backend is not available on this machine"
    else:
        why = "unknown device kind; supported kinds are cpu, cuda, cuda:N and mps"
    key = where.rsplit(": ", 1)[-1].removeprefix("--set ")
    raise ConfigError(f"{where}: {name!r} cannot be used ({why}); available here: {', '.join(known)}. "
                      f"Set {key}=auto to use the best one found")


# ------------------------------------------------------------------------------ building


def from_dict(data: dict, *, source: str = "config",
              overrides: list[tuple[str, str, str]] | tuple = ()) -> Config:
    """Validate a nested dict (plus ``--set`` overrides) into a :class:`Config`.

    Parameters
    ----------
    data : dict
        Section name -> table, as read from a file or built by the app.
    source : str
        What to name in errors about ``data`` (the file path, or ``"app"``).
    overrides : list of (section, key, text)
        ``--set`` values from :func:`parse_override`, parsed to each key's declared type and
        applied after ``data``.

    Raises
    ------
    ConfigError
        Unknown section or key, a value of the wrong type or out of range, an unavailable
        device, or model hyper-parameters the architecture rejects; the message names the key.
    """
    data = copy.deepcopy(data)
    known_sections = ", ".join([*SECTIONS, "model"])
    unknown = sorted(set(data) - set(SECTIONS) - {"model"})
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; known: {known_sections}")
    for section, key, _ in overrides:
        if section not in SECTIONS and section != "model":
            raise ConfigError(f"--set {section}.{key}: unknown section {section!r}; known: {known_sections}")
    kwargs: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = data.get(name, {}) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        types = field_types(cls)
        items = [(k, v, f"{source}: {name}.{k}", False) for k, v in values.items()]
        items += [(k, t, f"--set {name}.{k}", True) for s, k, t in overrides if s == name]
        out = {}
        for key, value, where, is_text in items:
            if key not in fields:
                raise ConfigError(f"{where}: unknown key; known keys of [{name}]: {', '.join(fields)}")
            choices = fields[key].metadata.get("choices", ())
            value = (parse_text(value, types[key], where, choices=choices) if is_text
                     else coerce_value(value, types[key], where, choices=choices))
            check_range(value, fields[key], where)
            if (name, key) == ("train", "device"):
                check_device(value, where)
            out[key] = value
        kwargs[name] = cls(**out)
    model = _model_values(data.get("model", {}) or {}, [(k, t) for s, k, t in overrides if s == "model"],
                          source=source)
    cfg = Config(model=model, **kwargs)
    model_sets = [f"--set model.{k}={t}" for s, k, t in overrides if s == "model"]
    validate(cfg, source=source, model_source=" with ".join([source, *model_sets]) if model_sets else None)
    return cfg


def _model_values(values: dict, texts: list[tuple[str, str]], *, source: str) -> dict:
    """The ``model`` table typed by the architecture's config dataclass."""
    from galaxy_core.models.registry import get_arch, known_archs

    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [model] must be a table")
    values = dict(values)
    arch_where = f"{source}: model.arch"
    for key, text in texts:
        if key == "arch":
            values["arch"], arch_where = parse_text(text, str, "--set model.arch"), "--set model.arch"
    arch = values.setdefault("arch", "dcgan")
    if not isinstance(arch, str):
        raise ConfigError(f"{arch_where}: expected an architecture name, got {arch!r}")
    if arch not in known_archs():
        raise ConfigError(f"{arch_where}: unknown architecture {arch!r}; known: {', '.join(known_archs())}")
    spec = get_arch(arch)
    fields = {f.name: f for f in dataclasses.fields(spec.config_cls)}
    types = field_types(spec.config_cls)
    items = [(k, v, f"{source}: model.{k}", False) for k, v in values.items() if k != "arch"]
    items += [(k, t, f"--set model.{k}", True) for k, t in texts if k != "arch"]
    for key, value, where, is_text in items:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key for arch {arch!r}; known: {', '.join(sorted(fields))}")
        values[key] = (parse_text(value, types[key], where) if is_text
                       else coerce_value(value, types[key], where))
    return values


def validate(cfg: Config, *, source: str = "config", model_source: str | None = None) -> None:
    """Check every value against the schema; also the device and ``model`` against its architecture.

    Parameters
    ----------
    cfg : Config
        Checked in place; numbers are normalised to their declared type (``1`` -> ``1.0``).
    source : str
        The file (or ``"app"``) to name in errors.
    model_source : str, optional
        What to name in errors of the architecture's own checks (defaults to ``source``).

    Raises
    ------
    ConfigError
        Naming the key, the value and what is allowed.
    """
    from galaxy_core.models.registry import make_config

    for name, cls in SECTIONS.items():
        section = getattr(cfg, name)
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            where = f"{source}: {name}.{f.name}"
            value = coerce_value(getattr(section, f.name), types[f.name], where,
                                 choices=f.metadata.get("choices", ()))
            check_range(value, f, where)
            setattr(section, f.name, value)
    g = cfg.log.grid_size
    if math.isqrt(g) ** 2 != g:
        raise ConfigError(f"{source}: log.grid_size: must be a square number (4, 9, 16, 25, 36, ...); got {g}")
    check_device(cfg.train.device, f"{source}: train.device")
    model = cfg.model_values()
    from galaxy_core.models.registry import get_arch

    if "resolution" in {f.name for f in dataclasses.fields(get_arch(cfg.arch).config_cls)}:
        model.setdefault("resolution", cfg.data.resolution)
    try:
        make_config(cfg.arch, model)
    except ConfigError as e:
        raise ConfigError(f"{model_source or source}: {e}") from e


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Read a config file (TOML or YAML), apply ``section.key=value`` overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        data = _read_file(p)
        source = str(p)
    parsed = [parse_override(item) for item in overrides]
    return from_dict(data, source=source, overrides=parsed)


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
