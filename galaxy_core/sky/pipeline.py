"""One implementation of "compose a sky from a description", shared by the CLI and the app.

A sky description (:class:`SkyConfig`, the ``[sky]`` table of ``configs/sky_*.toml``) names a
position source and a galaxy source:

=============  =====================================================================
positions      a position checkpoint (``.json``), ``"random"`` (independent cells),
               ``"baseline1"`` or ``"baseline2"`` (the whole sky from a baseline;
               ``galaxies`` is then ignored)
galaxies       a single-galaxy checkpoint (``.json``) or ``"stamps"`` (real hdf stamps)
=============  =====================================================================
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from galaxy_core.config import MAX_SEED, check_range, coerce_value, option
from galaxy_core.errors import ConfigError
from galaxy_core.sky.calibrate import FAINT_PROFILES
from galaxy_core.sky.compose import (ClassMatchedGalaxies, ModelGalaxies, ModelPositions, RandomPositions, Sky,
                                     StampGalaxies, compose_sky, resolve_cell_px)

BASELINES = ("baseline1", "baseline2")
POSITION_NAMES = ("random",) + BASELINES  # positions that are not checkpoint files
GALAXY_NAMES = ("stamps",)                # galaxies that are not checkpoint files
SOURCE_NAMES = POSITION_NAMES + GALAXY_NAMES


@dataclass
class SkyConfig:
    """What to compose; every field is checked against its annotation and range on creation.

    Raises
    ------
    ConfigError
        A field has the wrong type (``sky.height: expected a whole number, got 'big'``), is out
        of its range or not one of its choices, or ``class_mix`` is not 3 non-negative weights.
    """

    height: int = option(1000, low=1, high=8000)   # sky size in pixels
    width: int = option(1000, low=1, high=8000)
    seed: int = option(0, low=0, high=MAX_SEED)
    positions: str = "checkpoints/positions_hdf_cond.json"  # checkpoint, "random", "baseline1", "baseline2"
    galaxies: str = "checkpoints/fastgan_hdf32_w16.json"     # checkpoint or "stamps" (FastGAN 32 px, width 16: lowest C2ST, docs/families/sky.md)
    # "sample" (draw each cell's class) or "argmax" (near-empty grids from models trained with sampled cells)
    position_mode: str = option("sample", choices=("sample", "argmax"))
    class_mix: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])  # small/medium/large weights (occupancy models, random)
    occupancy: float = option(0.11, low=0.0, high=1.0)  # "random": probability that a cell holds a galaxy
    # cell side in pixels; default: the position model's (its grids'; 16 for the shipped ones), 16 for "random"
    cell_px: int | None = option(None, low=1)
    jitter: float = option(0.35, low=0.0, high=0.5)  # sub-cell jitter, fraction of a cell in [0, 0.5]
    flux_match: bool = False         # map model galaxies' fluxes onto the real stamps' flux distribution
    sharpen: bool = True             # give model galaxies the real stamps' power spectrum (flux kept)
    pixel_match: bool = True         # map model galaxies' pixel values onto the real stamps' distribution
    size_match: bool = False         # model galaxies: each cell's chosen by its measured size class among 4 (stamps have theirs)
    faint: bool = True               # add the faint sources below the grid catalogue's size cut
    subcatalogue: bool = True        # with faint: also the sources below the catalogue's detection limit
    # faint sources' profile: "moffat" (beta 4) or "gaussian", same moments
    faint_profile: str = option("moffat", choices=FAINT_PROFILES)
    faint_damping: bool = True       # faint sources lose the 2-2.5 px structure the field's lack (measured)
    stars: bool = True               # add the field's stars (with their spikes) at the field's density
    match_classes: bool = True       # thin the position model's cells to the data's class fractions
    modulate: bool = True            # vary the sky level and noise amplitude across the sky as the field does
    detect: bool = True              # run the detector and report completeness / purity
    radius: float = option(5.0, low=0.0, low_open=True)  # matching radius (pix)
    realism: bool = True             # realism score with the shipped scorer
    out: str = "sky"                 # output stem: OUT.png, OUT.fits, OUT.csv

    def __post_init__(self):
        for f in dataclasses.fields(self):
            setattr(self, f.name, _checked(f, getattr(self, f.name), f"sky.{f.name}"))


@functools.cache
def _sky_types() -> dict:
    return typing.get_type_hints(SkyConfig)


def _plain(value):
    """A numpy scalar as the Python number it holds (the type checks expect Python types)."""
    return value.item() if hasattr(value, "item") and getattr(value, "shape", None) == () else value


_NON_EMPTY = ("positions", "galaxies", "out")  # string keys that name something and cannot be blank


def _checked(f: dataclasses.Field, value, where: str):
    """``value`` of the :class:`SkyConfig` field ``f`` converted to its annotated type (an
    integer is accepted for a float, an integral float for an integer, as in training configs).

    Raises
    ------
    ConfigError
        Wrong type, outside the field's range or choices, a blank name, or a ``class_mix`` that is
        not 3 non-negative weights with a positive sum; the message starts with ``where``.
    """
    want = _sky_types()[f.name]
    value = _plain(value)
    if typing.get_origin(want) is list:  # class_mix: a list of numbers
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list of 3 numbers, got {value!r}")
        value = [coerce_value(_plain(v), float, f"{where}[{i}]") for i, v in enumerate(value)]
        if len(value) != 3 or min(value) < 0 or sum(value) <= 0:
            raise ConfigError(f"{where}: expected 3 non-negative weights (small, medium, large) with a positive "
                              f"sum, got {value}")
        return value
    if type(None) in typing.get_args(want):  # optional (cell_px): None means "from the model"
        if value is None:
            return None
        want = next(t for t in typing.get_args(want) if t is not type(None))
    value = coerce_value(value, want, where)
    check_range(value, f, where)
    if f.name in _NON_EMPTY and not value.strip():
        raise ConfigError(f"{where}: must not be empty")
    return value


def load_sky_config(path: str | Path | None, overrides: dict | None = None) -> SkyConfig:
    """Read the ``[sky]`` table of a TOML file (every key optional), then apply ``overrides``.

    Raises
    ------
    ConfigError
        The file cannot be read or is not TOML, holds anything but a ``[sky]`` table, a key is
        unknown, or a value has the wrong type or is out of range (file values are named
        ``PATH: sky.KEY``, overrides ``sky.KEY``).
    """
    values: dict = {}
    fields = {f.name: f for f in dataclasses.fields(SkyConfig)}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the sky config ({e})") from e
        stray = sorted(set(data) - {"sky"})
        if stray:
            raise ConfigError(f"{path}: {', '.join(stray)} outside the [sky] table; a sky config holds only [sky] "
                              "(put its keys under [sky])")
        table = data.get("sky", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: sky must be a table ([sky]), got {table!r}")
        _no_unknown_keys(table, fields, path)
        values = {k: _checked(fields[k], v, f"{path}: sky.{k}") for k, v in table.items()}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    _no_unknown_keys(overrides, fields, "sky config")
    return SkyConfig(**(values | overrides))


def _no_unknown_keys(keys, fields, where) -> None:
    unknown = sorted(set(keys) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} in [sky]; known: {', '.join(sorted(fields))}")


def _resolve(path: str) -> Path:
    """A checkpoint found as every command finds one (:func:`galaxy_core.paths.find_checkpoint`:
    from the working folder, the repository, then the shipped folder), else as given."""
    from galaxy_core.paths import find_checkpoint

    return find_checkpoint(path) or Path(path).expanduser()


@functools.lru_cache(maxsize=8)
def load_model(path: str):
    """A checkpoint loaded once per process (sampling networks in eval mode)."""
    from galaxy_core.models.pretrained import load_pretrained

    return load_pretrained(_resolve(path))


def check_checkpoint(value: str, *, option: str, names=(), kind: str = "a checkpoint") -> None:
    """Refuse a value of ``option`` that is none of ``names`` and names no checkpoint file.

    Parameters
    ----------
    value : str
        What was given: one of ``names`` or a checkpoint (``NAME`` or ``NAME.json``, found as
        :func:`load_model` finds it).
    option : str
        Where it was given, for the message: ``--positions``, ``sky.positions``,
        ``configs/x.toml: sky.galaxies``.
    names : sequence of str
        The values that are not files (``random``, ``stamps``, ``none``).
    kind : str
        What the checkpoint must be, for the message ("a position checkpoint").

    Raises
    ------
    ConfigError
        ``option``, ``value``, the file looked for, what may be given instead and the closest
        of ``names`` and the shipped checkpoints' names, e.g. ``--positions 'randm': no such
        checkpoint (looked for /here/randm.json, /repo/randm.json, /repo/checkpoints/randm.json);
        give random, baseline1, baseline2 or a position checkpoint (NAME.json); did you mean
        'random'?``.
    """
    from galaxy_core.paths import checkpoint_candidates, find_checkpoint, with_suffix_of

    if value in names or find_checkpoint(value) is not None:
        return
    tried = ", ".join(str(with_suffix_of(c.absolute(), ".json", (".json", ".safetensors")))
                      for c in checkpoint_candidates(value))
    give = f"{', '.join(names)} or {kind}" if names else kind
    raise ConfigError(f"{option} {value!r}: no such checkpoint (looked for {tried}); give {give} (NAME.json)"
                      f"{_did_you_mean(value, names)}")


def _did_you_mean(value: str, names) -> str:
    """``; did you mean 'X'?`` for the closest of ``names`` or of the shipped checkpoints, or ""."""
    from difflib import get_close_matches

    from galaxy_core.paths import closest_shipped_checkpoint

    close = get_close_matches(value, list(names), n=1)
    shown = close[0] if close else closest_shipped_checkpoint(value)
    return f"; did you mean {shown!r}?" if shown else ""


def check_sources(cfg: SkyConfig, *, options: dict | None = None) -> None:
    """Refuse positions and galaxies (the latter unless a baseline makes the whole sky) that
    name no checkpoint, before any work (:func:`check_checkpoint`).

    ``options`` maps ``positions`` / ``galaxies`` to where the value was given, for the message
    (``--positions``); the default is the config key (``sky.positions``).

    Raises
    ------
    ConfigError
        A value that is not a file nor one of the names allowed there.
    """
    options = options or {}
    check_checkpoint(cfg.positions, option=options.get("positions", "sky.positions"), names=POSITION_NAMES,
                     kind="a position checkpoint")
    if cfg.positions not in BASELINES:
        check_checkpoint(cfg.galaxies, option=options.get("galaxies", "sky.galaxies"), names=GALAXY_NAMES,
                         kind="a galaxy checkpoint")


def position_source(cfg: SkyConfig):
    if cfg.positions == "random":
        return RandomPositions(p=cfg.occupancy, class_mix=tuple(cfg.class_mix))
    model = load_model(cfg.positions)
    if model.family.data_kind != "grid":
        raise ConfigError(f"sky.positions: {cfg.positions} is a {model.family.name} model, not a position model")
    occupancy_only = model.model_cfg.num_classes == 2
    positions = _model_positions(cfg.positions, cfg.position_mode, tuple(cfg.class_mix) if occupancy_only else None,
                                 cfg.match_classes)
    if cfg.match_classes:
        try:  # measured once per source anyway; here so that a model that cannot match is a config error
            positions.keep_probabilities()
        except ValueError as e:
            raise ConfigError(f"sky.match_classes: {cfg.positions}: {e} (match_classes = false)") from e
    return positions


def galaxy_source(cfg: SkyConfig, positions=None):
    """The galaxy source of ``cfg``; ``positions`` (the position source) gives ``size_match``
    the size thresholds of the grids a position model learnt (the ``hdf`` ones otherwise)."""
    if cfg.galaxies == "stamps":
        return StampGalaxies()
    model = load_model(cfg.galaxies)
    if model.family.data_kind == "grid" or len(model.channels) != 3:
        raise ConfigError(f"sky.galaxies: {cfg.galaxies} is not a 3-band single-galaxy model")
    source = _model_galaxies(cfg.galaxies, cfg.flux_match, cfg.sharpen, cfg.pixel_match)
    if not cfg.size_match:
        return source
    props = getattr(positions, "properties", None)
    if props is not None and props.thresholds is None:
        raise ConfigError(f"sky.size_match: {cfg.positions} does not record the size thresholds of the grids it was "
                          "trained on (saved before they were recorded); retrain it, or set size_match = false")
    return ClassMatchedGalaxies(source, thresholds=None if props is None else props.thresholds)


# One source per checkpoint and options per process: their calibrations (class fractions of 256
# grids; flux, sharpness and pixel maps of 512 galaxies, about a second) are measured once, not
# on every compose. Draws depend only on the rng passed in, so reuse keeps skies deterministic.
@functools.lru_cache(maxsize=8)
def _model_positions(path: str, mode: str, class_mix, match_classes: bool) -> ModelPositions:
    return ModelPositions(load_model(path), mode=mode, class_mix=class_mix, match_classes=match_classes)


@functools.lru_cache(maxsize=8)
def _model_galaxies(path: str, flux_match: bool, sharpen: bool, pixel_match: bool) -> ModelGalaxies:
    return ModelGalaxies(load_model(path), flux_match=flux_match, sharpen=sharpen, pixel_match=pixel_match)


def compose(cfg: SkyConfig, *, progress=False) -> Sky:
    """The sky a :class:`SkyConfig` describes (deterministic for ``cfg.seed``); ``progress`` as
    in :func:`~galaxy_core.sky.compose.compose_sky` (True: tqdm bar; callable (done, total)).

    Raises
    ------
    ConfigError
        Positions or galaxies that name no checkpoint (:func:`check_sources`, before any work),
        a checkpoint of the wrong kind, or options the position model cannot honour.
    """
    check_sources(cfg)
    if cfg.positions in BASELINES:
        from galaxy_core.sky.baselines import baseline_geometric, baseline_uniform

        fn = baseline_uniform if cfg.positions == "baseline1" else baseline_geometric
        sky = fn(height=cfg.height, width=cfg.width, seed=cfg.seed, modulate=cfg.modulate)
        sky.meta["config"] = {k: v for k, v in dataclasses.asdict(cfg).items() if k in BASELINE_OPTIONS}
        return sky
    from galaxy_core.sky.calibrate import FaintSources, FieldStars

    faint = FaintSources(subcatalogue=cfg.subcatalogue, profile=cfg.faint_profile, damping=cfg.faint_damping) if cfg.faint else None
    positions = position_source(cfg)
    try:
        cell_px = resolve_cell_px(positions, cfg.cell_px)
    except ValueError as e:
        raise ConfigError(f"sky.cell_px: {cfg.positions}: {e}") from e
    sky = compose_sky(height=cfg.height, width=cfg.width, positions=positions, galaxies=galaxy_source(cfg, positions),
                      cell_px=cell_px, jitter=cfg.jitter, faint=faint, stars=FieldStars() if cfg.stars else None,
                      seed=cfg.seed, modulate=cfg.modulate, progress=progress)
    sky.meta["config"] = dataclasses.asdict(cfg)  # every option that shaped the image, for the FITS header
    for role in ("positions", "galaxies"):  # the checkpoints' content ids: the path alone may be reused
        path = getattr(cfg, role)
        if path not in SOURCE_NAMES:
            model = load_model(path)  # loaded once per process already
            sky.meta[f"{role}_id"] = model.id
            sky.meta[f"{role}_path"] = str(Path(model.path).resolve())  # the file used, wherever it was named from
    return sky


BASELINE_OPTIONS = ("height", "width", "seed", "positions", "modulate")  # all a baseline sky depends on
