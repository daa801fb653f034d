"""Cached access to checkpoints and generated images, shared by every page.

Models are loaded once per process (``st.cache_resource``), keyed by path and modification time
so a run's ``last`` checkpoint is reloaded when training rewrites it. Generated images are pure
functions of (checkpoint, latents) and cached with ``st.cache_data``, so moving one slider only
regenerates the images that slider changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from galaxy_core.errors import CheckpointError
from galaxy_core.io.render import to_rgb
from galaxy_core.models.pretrained import Pretrained, list_checkpoints, load_pretrained
from galaxy_core.paths import checkpoints_dir, runs_dir

CHECKPOINT_KEY = "checkpoint"  # st.session_state key of the sidebar's checkpoint picker


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint on disk, as the app lists it."""

    path: str        # the checkpoint JSON
    label: str       # e.g. "dcgan_sim64 · shipped" or "classroom · last"
    shipped: bool

    @property
    def mtime_ns(self) -> int:
        return stamp(self.path)


def stamp(path: str) -> int:
    """Modification time of a checkpoint's tensors (0 when missing): part of every cache key."""
    try:
        return Path(path).with_suffix(".safetensors").stat().st_mtime_ns
    except OSError:
        return 0


DEFAULT_CHECKPOINT = "dcgan_hdf32"  # what a first visit shows: the classroom preset's model


def _is_grid_model(path) -> bool:
    from galaxy_core.io.checkpoint import read_meta

    return read_meta(path).get("data", {}).get("kind") == "grid"


def find_checkpoints() -> list[CheckpointRef]:
    """Shipped checkpoints first (by name), then every run's ``best`` and ``last``."""
    shipped = sorted((p for p in list_checkpoints(checkpoints_dir()) if not _is_grid_model(p)),  # grids: Sky page
                     key=lambda p: (p.stem != DEFAULT_CHECKPOINT, p.stem))  # the classroom model first
    refs = [CheckpointRef(str(p), f"{p.stem} · shipped", True) for p in shipped]
    for p in list_checkpoints(runs_dir()):
        if p.parent.name == "checkpoints":
            refs.append(CheckpointRef(str(p), f"{p.parent.parent.name} · {p.stem}", False))
    return refs


@st.cache_resource(max_entries=8, show_spinner="Loading the generator…")
def _load(path: str, mtime_ns: int) -> Pretrained:
    return load_pretrained(path)


def load_model(path: str) -> Pretrained:
    """The generator of a checkpoint, loaded once per process (and again when the file changes)."""
    if not Path(path).with_suffix(".json").exists():
        raise CheckpointError(f"{path}: checkpoint not found (was it deleted or moved?)")
    return _load(path, stamp(path))


def selected_path() -> str | None:
    """The checkpoint chosen in the sidebar (None when there is none)."""
    return st.session_state.get(CHECKPOINT_KEY)


def selected_model() -> Pretrained:
    """The sidebar's checkpoint, loaded; raises :class:`CheckpointError` when none is usable."""
    path = selected_path()
    if not path:
        raise CheckpointError("no checkpoint selected: train one on the Train page or add one to checkpoints/")
    return load_model(path)


@st.cache_data(max_entries=128, show_spinner=False)
def _render(path: str, mtime_ns: int, z: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    model = _load(path, mtime_ns)
    return to_rgb(model.generate(z, labels=labels), model.channels)


@st.cache_data(max_entries=32, show_spinner=False)
def _render_stages(path: str, mtime_ns: int, z: np.ndarray, labels: np.ndarray | None) -> dict[str, np.ndarray]:
    model = _load(path, mtime_ns)
    return {name: to_rgb(x, model.channels) for name, x in model.generate_stages(z, labels=labels).items()}


def _labels(model: Pretrained, z: np.ndarray, labels) -> np.ndarray | None:
    """(n,) int64 labels for a conditional model (``labels``, or label ``i % num_classes`` for
    image i, the rule of :meth:`Pretrained.generate`), None for an unconditional one."""
    if not model.num_classes:
        return None
    n = len(z)
    if labels is None:
        return np.arange(n, dtype=np.int64) % model.num_classes
    out = np.broadcast_to(np.asarray(labels, np.int64), (n,)).copy()
    if out.size and (out.min() < 0 or out.max() >= model.num_classes):
        raise ValueError(f"class labels must lie in 0..{model.num_classes - 1}, got {sorted(set(out.tolist()))}")
    return out


def render_stages(model: Pretrained, z: np.ndarray, labels=None) -> dict[str, np.ndarray]:
    """Display RGB of every stage of a chained model: ``{stage: uint8 (n, H, W, 3)}``.
    ``labels``: a conditional model's class label per image (n,) or one for all; default
    ``i % num_classes``."""
    z = np.ascontiguousarray(z, np.float32)
    return _render_stages(str(model.path), stamp(str(model.path)), z, _labels(model, z, labels))


def render(model: Pretrained, z: np.ndarray, labels=None) -> np.ndarray:
    """Display RGB for latents ``z`` (n, z_dim): uint8 (n, H, W, 3), cached by value of ``z``
    (and of ``labels``, as :func:`render_stages`)."""
    z = np.ascontiguousarray(z, np.float32)
    return _render(str(model.path), stamp(str(model.path)), z, _labels(model, z, labels))


@st.cache_data(max_entries=64, show_spinner=False)
def _seed_latents(path: str, mtime_ns: int, seed: int, n: int) -> np.ndarray:
    return _load(path, mtime_ns).latents(seed, n).numpy()


def seed_latents(model: Pretrained, seed: int, n: int) -> np.ndarray:
    """(n, z_dim) float32 latents of a seed (``latents(seed, n)[i]`` is independent of n)."""
    return _seed_latents(str(model.path), stamp(str(model.path)), int(seed), int(n))


def model_cache_key(model: Pretrained) -> tuple[str, int]:
    """(path, mtime) identifying a loaded model in other cached functions."""
    return str(model.path), stamp(str(model.path))


def cached_model(key: tuple[str, int]) -> Pretrained:
    """The model for a :func:`model_cache_key` (used inside ``st.cache_data`` functions)."""
    return _load(*key)


@st.cache_resource(max_entries=8, show_spinner=False)
def _open_prepared(root: str):
    from galaxy_core.data.prepared import open_prepared

    return open_prepared(root)


class _StageBar:
    """A ``st.progress`` bar driven by the package's progress convention
    (:mod:`galaxy_core.progress`): ``bar(done, total)`` moves it, ``bar.phase(desc, total)``
    names the stage now counted ("hashing files", "decoding images", ...). It redraws at most
    a hundred times per stage, however many images."""

    def __init__(self, title: str):
        self.title, self.stage, self._shown = title, "", None
        self._el = st.empty()

    def phase(self, desc: str, total: int) -> None:
        self.stage, self._shown = desc, None
        self(0, total)

    def __call__(self, done: int, total: int) -> None:
        percent = int(100 * done / max(total, 1))
        if percent != self._shown:
            self._shown = percent
            stage = f"{self.stage}, " if self.stage else ""
            self._el.progress(min(done / max(total, 1), 1.0), text=f"{self.title}: {stage}{done:,} of {total:,}")

    def empty(self) -> None:
        self._el.empty()


_PREPARED: dict[tuple, str] = {}  # data key -> its prepared folder, once this process has prepared or found it


def dataset(key: tuple):
    """A prepared dataset for a :func:`data_key`, opened once per process (memory-mapped).

    The first time in a process the data is prepared (or found in the disk cache) under a
    progress bar: simulating the 10,000 ``sim`` galaxies or decoding a large folder takes
    minutes on a fresh cache. Later calls open the prepared folder it was written to, without
    hashing a folder's files again."""
    root = _PREPARED.get(key)
    if root is None:
        from galaxy_core.explore.evaluation import open_reference

        spec, resolution, crop, count, seed, normalisation, neighbours = key
        bar = _StageBar(f"Preparing {Path(str(spec)).name} ({resolution} px; cached after the first time)")
        try:
            data = open_reference(spec, resolution=resolution, crop=crop, count=count, seed=seed,
                                  normalisation=normalisation, neighbours=neighbours, progress=bar)
        finally:
            bar.empty()
        root = _PREPARED[key] = str(data.root)
    return _open_prepared(root)


def data_key(spec: str, *, resolution: int, crop: float = 1.0, count: int | None = None, seed: int = 0,
             normalisation: str = "asinh", neighbours: str = "keep") -> tuple:
    """Hashable description of a dataset: (spec, resolution, crop, count, seed, normalisation, neighbours)."""
    return (str(spec), int(resolution), float(crop), None if count is None else int(count), int(seed), normalisation,
            neighbours)


@st.cache_resource(max_entries=4, show_spinner="Loading the feature extractor…")
def feature_fn(name: str):
    """A feature extractor by name, loaded once per process (see ``galaxy_core.explore.evaluation``)."""
    from galaxy_core.explore.evaluation import load_feature_fn

    return load_feature_fn(name)


@st.cache_data(max_entries=128, show_spinner=False)
def _render_ws(path: str, mtime_ns: int, ws: np.ndarray) -> np.ndarray:
    from galaxy_core.explore.style import synthesize

    model = _load(path, mtime_ns)
    return to_rgb(synthesize(model, ws), model.channels)


def render_ws(model: Pretrained, ws: np.ndarray) -> np.ndarray:
    """Display RGB of a StyleGAN's images for per-layer styles ``ws`` (n, num_ws, w_dim): uint8
    (n, H, W, 3), with the checkpoint's constant noise; cached by value of ``ws``."""
    return _render_ws(str(model.path), stamp(str(model.path)), np.ascontiguousarray(ws, np.float32))


@st.cache_data(max_entries=64, show_spinner=False)
def _mapped(path: str, mtime_ns: int, z: np.ndarray) -> np.ndarray:
    from galaxy_core.explore.style import mapping, w_plus

    model = _load(path, mtime_ns)
    return w_plus(mapping(model, z), model.G.num_ws)


def mapped_ws(model: Pretrained, z: np.ndarray) -> np.ndarray:
    """A StyleGAN's styles for latents ``z`` (n, z_dim): (n, num_ws, w_dim) float32, w repeated per layer."""
    return _mapped(str(model.path), stamp(str(model.path)), np.ascontiguousarray(z, np.float32))


def has_w(model: Pretrained) -> bool:
    """True for a family with a w latent space (StyleGAN): the page shows projection and GANSpace."""
    return "w" in model.latent_spaces
