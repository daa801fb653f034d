"""Feature extractors for FID/KID-style metrics, their reference statistics and soundness test.

The standard FID (Heusel et al. 2017, NeurIPS, "GANs trained by a two time-scale update rule
converge to a local Nash equilibrium") measures distances between Inception-v3 ``pool3``
features. Those weights cannot be downloaded here, so two extractors are registered:

============  ======================================================================  =====
name          what                                                                     dim
============  ======================================================================  =====
``galaxy``    :class:`GalaxyEncoder`, a small CNN shipped in                           128
              ``checkpoints/galaxy_encoder.{safetensors,json}``, trained on the
              built-in data by :mod:`galaxy_core.metrics.encoder_training`
              (supervised regression of the ``sim`` truth parameters plus the
              SimCLR contrastive loss of Chen et al. 2020, ICML, on ``sim`` and
              ``hdf``). Metrics from it are named ``fid_galaxy_*``, ``kid_galaxy_*``.
``inception`` the FID Inception-v3 from a local TorchScript file (see below). Only     2048
              this one gives the standard, literature-comparable FID.
============  ======================================================================  =====

Values from different extractors are on different scales and must never be compared; the
extractor's name goes into every metric name (:func:`galaxy_core.metrics.fid.metric_name`) and
its :attr:`Extractor.id` (a hash of its weights) into every cache key.

Inception weights
-----------------
Accepted: the TorchScript translation of the TensorFlow FID graph
``inception-2015-12-05.tgz`` published with NVIDIA's ``stylegan2-ada-pytorch`` as
``inception-2015-12-05.pt`` (the file ``clean-fid`` uses too). It is loaded with
:func:`torch.jit.load` (TorchScript, never :mod:`pickle`) and called as
``module(uint8 images (N, 3, H, W), return_features=True)``; it resizes to 299 px itself.
Pickled files (``inception-2015-12-05.pkl``, ``pt_inception-*.pth`` state dicts) are refused.
The file is found from the ``path`` argument or the ``GALAXYGAN_INCEPTION`` environment
variable; nothing is ever downloaded.

Soundness
---------
:func:`disturbance_curves` repeats the disturbance experiment of Heusel et al. 2017 (their
Fig. 1 / appendix): the FID between clean real images and the same images with increasing
Gaussian noise, Gaussian blur or masking rectangles must grow monotonically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galaxy_core.errors import CheckpointError, ConfigError
from galaxy_core.io.units import model_to_uint8
from galaxy_core.paths import cache_dir, checkpoints_dir

__all__ = [
    "BASELINES",
    "DISTURBANCES",
    "ENCODER_NAME",
    "EXTRACTORS",
    "EncoderConfig",
    "Extractor",
    "GalaxyEncoder",
    "INCEPTION_ENV",
    "KIND",
    "baseline_images",
    "default_encoder_path",
    "disturb",
    "disturbance_curves",
    "encoder_extractor",
    "fid_between",
    "is_feature_extractor",
    "load_encoder",
    "load_extractor",
    "reference_cache_path",
    "reference_statistics",
    "save_encoder",
    "to_encoder_input",
]

KIND = "feature_extractor"  # meta["kind"] of an encoder checkpoint; GAN checkpoints are "gan"
ENCODER_ARCH = "galaxy_encoder"
ENCODER_NAME = "galaxy_encoder"  # checkpoints/galaxy_encoder.{safetensors,json}
INCEPTION_ENV = "GALAXYGAN_INCEPTION"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
REFSTATS_VERSION = "refstats/1"


# ------------------------------------------------------------------------------ the encoder


@dataclass
class EncoderConfig:
    """Architecture of :class:`GalaxyEncoder` (saved whole in the checkpoint JSON)."""

    resolution: int = 64                           # input side; other sizes are resized to it
    in_channels: int = 3                           # 1-channel input is repeated to 3
    channels: tuple[int, ...] = (24, 48, 96, 128)  # one stride-2 block each: 64 -> 4 px
    feature_dim: int = 128                         # length of the feature vector
    groups: int = 8                                # GroupNorm groups (no train/eval difference)
    slope: float = 0.2                             # LeakyReLU negative slope

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "channels" in known:
            known["channels"] = tuple(int(c) for c in known["channels"])
        return cls(**known)


class DownBlock(nn.Module):
    """3x3 convolution with stride 2, GroupNorm, LeakyReLU: (N, C, H, W) -> (N, C', H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int, *, groups: int, slope: float):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(math.gcd(groups, c_out), c_out)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class GalaxyEncoder(nn.Module):
    """Small CNN mapping a galaxy stamp to a feature vector (the penultimate layer of the
    training network; the regression and projection heads are not part of it).

    Input ``(N, in_channels, resolution, resolution)`` float32 in [-1, 1]; output
    ``(N, feature_dim)`` float32, unbounded. Use :func:`to_encoder_input` for other sizes
    or channel counts.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        chans = (cfg.in_channels, *cfg.channels)
        self.blocks = nn.Sequential(*[
            DownBlock(a, b, groups=cfg.groups, slope=cfg.slope) for a, b in zip(chans[:-1], chans[1:])
        ])
        side = cfg.resolution // 2 ** len(cfg.channels)
        self.fc = nn.Linear(cfg.channels[-1] * side * side, cfg.feature_dim)  # keeps layout, not only content

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(x)  # (N, C_last, side, side)
        return self.fc(h.flatten(1))  # (N, feature_dim)


def to_encoder_input(x: torch.Tensor, *, resolution: int, channels: int = 3) -> torch.Tensor:
    """Bring images to the encoder's input shape.

    Parameters
    ----------
    x : Tensor, (N, C, H, W), float, [-1, 1]
        C is 1 (repeated to ``channels``) or ``channels``; H and W any size.
    resolution : int
        Output side; other sizes are resized bilinearly with anti-aliasing.
    channels : int
        Channels the encoder expects.

    Returns
    -------
    Tensor, (N, channels, resolution, resolution), float32
    """
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    x = x.float()
    if x.shape[1] == 1 and channels != 1:
        x = x.expand(-1, channels, -1, -1)
    if x.shape[1] != channels:
        raise ValueError(f"images have {x.shape[1]} channels; the extractor takes 1 or {channels}")
    if x.shape[-2:] != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return x


def default_encoder_path() -> Path:
    """The shipped encoder: ``checkpoints_dir()/galaxy_encoder.json``."""
    return checkpoints_dir() / f"{ENCODER_NAME}.json"


def save_encoder(path: str | os.PathLike, E: GalaxyEncoder, *, meta: dict) -> Path:
    """Write ``E`` as ``NAME.safetensors`` + ``NAME.json`` (atomic; see
    :func:`galaxy_core.io.checkpoint.save_checkpoint`). ``meta`` is the model card
    (``training``, ``soundness``, ...); ``kind``, ``arch`` and ``model`` are filled in here."""
    from galaxy_core.io.checkpoint import prefixed, save_checkpoint

    card = dict(meta, kind=KIND, arch=ENCODER_ARCH, model=asdict(E.cfg))
    return save_checkpoint(path, prefixed("E", E.state_dict()), card)


def load_encoder(path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
                 ) -> tuple[GalaxyEncoder, dict]:  # fmt: skip
    """Load an encoder checkpoint (default: the shipped one) in eval mode.

    Returns
    -------
    E : GalaxyEncoder
    meta : dict
        The checkpoint JSON (model card).
    """
    from galaxy_core.io.checkpoint import load_checkpoint, subdict

    path = Path(path) if path is not None else default_encoder_path()
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != KIND or meta.get("arch") != ENCODER_ARCH:
        raise CheckpointError(f"{path}: not a galaxy encoder checkpoint (kind={meta.get('kind')!r}, "
                              f"arch={meta.get('arch')!r}); point to galaxy_encoder.json")
    E = GalaxyEncoder(EncoderConfig.from_dict(meta["model"]))
    try:
        E.load_state_dict(subdict(tensors, "E"))
    except RuntimeError as e:
        raise CheckpointError(f"{path}: tensors do not fit the architecture in its JSON ({e})") from e
    return E.eval().requires_grad_(False).to(device), meta


def is_feature_extractor(meta: dict) -> bool:
    """True for a checkpoint description written by :func:`save_encoder` (not a GAN)."""
    return meta.get("kind") == KIND


# ----------------------------------------------------------------------------- extractors


@dataclass
class Extractor:
    """A feature extractor: images in [-1, 1] to float64 feature vectors.

    Attributes
    ----------
    name : str
        ``"galaxy"``, ``"inception"`` or ``"pix8"``; goes into metric names (``fid_galaxy_5k``).
    dim : int
        Feature length (-1 when it depends on the number of bands, as for ``pix8``).
    id : str
        Short hash of the weights (12 hex digits); goes into cache keys.
    preprocess : str
        What is done to images before the network; part of cache keys.
    """

    name: str
    dim: int
    id: str
    preprocess: str
    forward: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    device: torch.device = field(default=torch.device("cpu"), repr=False)
    meta: dict = field(default_factory=dict, repr=False)

    def __call__(self, images, *, batch: int = 256) -> np.ndarray:
        """Features of ``images``.

        Parameters
        ----------
        images : ndarray or Tensor, (N, C, H, W), float, [-1, 1]
            C = 1 or 3, any H, W.
        batch : int
            Images per forward pass (memory, not results, depends on it).

        Returns
        -------
        ndarray, (N, dim), float64
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        x = images if torch.is_tensor(images) else torch.from_numpy(np.asarray(images))
        if x.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
        parts = []
        with torch.inference_mode():
            for a in range(0, len(x), batch):
                f = self.forward(x[a : a + batch].to(self.device, torch.float32))
                parts.append(f.double().cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, max(self.dim, 0)), np.float64)


def encoder_extractor(E: GalaxyEncoder, *, id: str, meta: dict | None = None,
                      device: str | torch.device = "cpu") -> Extractor:  # fmt: skip
    """Wrap an in-memory :class:`GalaxyEncoder` (e.g. one being evaluated after training) as
    the ``galaxy`` extractor; ``id`` names its weights in cache keys."""
    E = E.eval().to(device)
    cfg = E.cfg

    def forward(x: torch.Tensor) -> torch.Tensor:
        return E(to_encoder_input(x, resolution=cfg.resolution, channels=cfg.in_channels))

    return Extractor(
        name="galaxy",
        dim=cfg.feature_dim,
        id=id,
        preprocess=f"1->{cfg.in_channels} channels, bilinear antialiased resize to {cfg.resolution}",
        forward=forward,
        device=torch.device(device),
        meta=meta or {},
    )


def _galaxy_extractor(path, device: torch.device) -> Extractor:
    E, meta = load_encoder(path, device=device)
    return encoder_extractor(E, id=meta["tensors_sha256"][:12], meta=meta, device=device)


def _inception_help() -> str:
    return (
        f"Standard FID needs the Inception-v3 weights of the reference implementation as the "
        f"TorchScript file {INCEPTION_FILE} (published with NVIDIA's stylegan2-ada-pytorch at "
        f"{INCEPTION_URL}). Download it on a machine with internet access, copy it to this one, "
        f"and set {INCEPTION_ENV}=/path/to/{INCEPTION_FILE} (or pass path=...). This program never "
        "downloads it. Without it, use the 'galaxy' extractor (metrics named fid_galaxy_*)."
    )


def _inception_extractor(path, device: torch.device) -> Extractor:
    from galaxy_core.data.prepared import file_hash

    path = path if path is not None else os.environ.get(INCEPTION_ENV)
    if not path:
        raise ConfigError(f"inception: no weights file given. {_inception_help()}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: Inception weights file not found. {_inception_help()}")
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but the file only exists in it
            warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"{path}: not a TorchScript file ({e.__class__.__name__}); pickled "
                          f"weights (.pkl, .pth state dicts) are not accepted. {_inception_help()}") from e

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = to_encoder_input(x, resolution=x.shape[-1], channels=3)  # 1 -> 3 channels only
        u8 = model_to_uint8(x)  # the reference input
        return module(u8, return_features=True)

    try:
        with torch.inference_mode():
            dim = int(forward(torch.zeros(2, 3, 64, 64, device=device)).shape[-1])
    except Exception as e:  # TorchScript raises its own error types
        raise ConfigError(f"{path}: TorchScript file does not behave like {INCEPTION_FILE} "
                          f"(module(images, return_features=True) failed: {e}). {_inception_help()}") from e
    return Extractor(
        name="inception",
        dim=dim,
        id=file_hash(path)[:12],
        preprocess="1->3 channels, quantised to uint8, module resizes to 299",
        forward=forward,
        device=device,
        meta={"path": str(path)},
    )


def _pix8_extractor(path, device: torch.device) -> Extractor:
    """Each band average-pooled to 8x8 pixels: no weights, cheap, tracks colour, size and light
    profile; not perceptual and not comparable to the other extractors."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 8).flatten(1)

    return Extractor(name="pix8", dim=-1, id="pix8", preprocess="adaptive average pool to 8x8 per band",
                     forward=forward, device=device)


EXTRACTORS: dict[str, Callable[..., Extractor]] = {
    "galaxy": _galaxy_extractor,
    "inception": _inception_extractor,
    "pix8": _pix8_extractor,
}


def load_extractor(name: str = "galaxy", *, path: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu") -> Extractor:  # fmt: skip
    """Load a feature extractor by name.

    Parameters
    ----------
    name : {"galaxy", "inception"}
        ``"galaxy"``: the project's :class:`GalaxyEncoder` (default: the shipped checkpoint).
        ``"inception"``: the FID Inception-v3 from a local TorchScript file.
    path : path, optional
        Checkpoint JSON/safetensors of an encoder, or the Inception ``.pt`` file (default
        ``$GALAXYGAN_INCEPTION``).
    device : str or torch.device

    Raises
    ------
    ConfigError
        Unknown name, or no usable Inception file (the message says how to obtain one).
    CheckpointError
        The encoder checkpoint is missing or broken.
    """
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown feature extractor {name!r}; known: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](path, torch.device(device))


# -------------------------------------------------------------------- reference statistics


def _refstats_key(dataset, extractor: Extractor, *, n: int) -> str:
    blob = json.dumps({
        "version": REFSTATS_VERSION,
        "dataset": dataset.manifest["key"],
        "extractor": extractor.name,
        "extractor_id": extractor.id,
        "preprocess": extractor.preprocess,
        "images": f"first {n}",
    }, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def reference_cache_path(dataset, extractor: Extractor, *, max_images: int = 10_000) -> Path:
    """Where :func:`reference_statistics` caches its result for these arguments."""
    n = min(len(dataset), int(max_images))
    key = _refstats_key(dataset, extractor, n=n)
    return cache_dir() / "refstats" / f"{dataset.name}-{extractor.name}-{n}-{key}.npz"


def _load_refstats(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["mu"], z["sigma"], z["features"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # missing or damaged: recompute


def reference_statistics(dataset, extractor: Extractor, *, max_images: int = 10_000, cache: bool = True,
                         batch: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Features of a dataset's first ``max_images`` images and their mean and covariance.

    Cached as ``cache_dir()/refstats/NAME-EXTRACTOR-N-KEY.npz`` where KEY hashes the dataset's
    manifest key, the extractor's name, weight hash and preprocessing, and N (written
    atomically; a damaged file is recomputed).

    Parameters
    ----------
    dataset : PreparedDataset
    extractor : Extractor
    max_images : int
        Use ``min(len(dataset), max_images)`` images, in dataset order.
    cache : bool
        Read and write the cache (False: always compute, write nothing).
    batch : int
        Images per forward pass.

    Returns
    -------
    mu : ndarray, (D,), float64
    sigma : ndarray, (D, D), float64
    features : ndarray, (N, D), float64
    """
    from galaxy_core.io.atomic import atomic_open
    from galaxy_core.metrics.fid import feature_statistics

    n = min(len(dataset), int(max_images))
    if n < 2:
        raise ValueError(f"{dataset.name}: need at least 2 images for statistics, got {n}")
    path = reference_cache_path(dataset, extractor, max_images=max_images)
    if cache and path.exists() and (hit := _load_refstats(path)) is not None:
        return hit
    chunk = 2048  # images decoded at a time (bounds memory for large datasets)
    feats = np.concatenate([extractor(dataset.to_model_range(slice(a, min(a + chunk, n))), batch=batch)
                            for a in range(0, n, chunk)])  # fmt: skip
    mu, sigma = feature_statistics(feats)
    if cache:
        with atomic_open(path, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma, features=feats)
    return mu, sigma, feats


def fid_between(a_feats, b_feats) -> float:
    """FID between two feature sets ``(N, D)``, ``(M, D)`` of one extractor (Heusel et al. 2017)."""
    from galaxy_core.metrics.fid import fid_from_features

    return fid_from_features(a_feats, b_feats)


# -------------------------------------------------------------------- disturbances (soundness)

# Strength 1 of each disturbance at 64 px, in model units [-1, 1] or pixels.
DISTURBANCES = {
    "noise": 0.4,  # Gaussian noise sigma (model units)
    "blur": 2.0,   # Gaussian blur sigma (pixels at 64 px; scaled with the image size)
    "mask": 0.4,   # fraction of the image area covered by the rectangle
}


def _background(x: np.ndarray, *, border: int = 4) -> np.ndarray:
    """Per-image, per-channel median of the outer ``border`` pixels: (N, C, 1, 1)."""
    ring = np.concatenate([x[..., :border, :].reshape(*x.shape[:2], -1), x[..., -border:, :].reshape(*x.shape[:2], -1),
                           x[..., :, :border].reshape(*x.shape[:2], -1), x[..., :, -border:].reshape(*x.shape[:2], -1)],
                          axis=-1)  # fmt: skip
    return np.median(ring, axis=-1)[..., None, None]


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix of a 1-D Gaussian blur with mirror-reflected edges (``a b c | b a``)."""
    r = min(n - 1, max(1, int(math.ceil(3 * sigma))))
    k = np.arange(-r, r + 1)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    w /= w.sum()
    m = np.zeros((n, n))
    for i in range(n):
        j = np.abs(i + k)  # reflect at 0
        j = np.where(j > n - 1, 2 * (n - 1) - j, j)  # reflect at n - 1
        np.add.at(m[i], j, w)
    return m.astype(np.float32)


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (N, C, H, W) with reflecting edges (two small matmuls)."""
    if sigma <= 0:
        return x.copy()
    bh, bw = _blur_matrix(x.shape[-2], sigma), _blur_matrix(x.shape[-1], sigma)
    return bh @ (x @ bw.T)  # rows: bh acts on H; columns: bw acts on W


def _mask_boxes(n: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Per image a random centre (cy, cx) and aspect ratio a: (n, 3) in units of the image."""
    return np.stack([rng.uniform(0.25, 0.75, n), rng.uniform(0.25, 0.75, n),
                     np.exp(rng.uniform(-0.5, 0.5, n))], axis=1)  # fmt: skip


def _draw(kind: str, shape: tuple[int, ...], rng: np.random.Generator):
    """The random part of a disturbance: a noise field, rectangle placements, or None."""
    if kind == "noise":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "mask":
        return _mask_boxes(shape[0], shape[-2], shape[-1], rng)
    return None


def _apply(x: np.ndarray, *, kind: str, strength: float, draws) -> np.ndarray:
    n, _, h, w = x.shape
    amount = strength * DISTURBANCES[kind]
    if kind == "noise":
        out = x + amount * draws
    elif kind == "blur":
        out = _gaussian_blur(x, amount * h / 64)
    else:
        out = x.copy()
        bg = _background(x)
        for i, (cy, cx, aspect) in enumerate(draws):
            bh = min(h, int(round(h * math.sqrt(amount * aspect))))
            bw = min(w, int(round(w * math.sqrt(amount / aspect))))
            y0 = int(np.clip(round(cy * h - bh / 2), 0, h - bh))
            x0 = int(np.clip(round(cx * w - bw / 2), 0, w - bw))
            out[i, :, y0 : y0 + bh, x0 : x0 + bw] = bg[i]
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _check_kind(kind: str) -> None:
    if kind not in DISTURBANCES:
        raise ValueError(f"unknown disturbance {kind!r}; known: {', '.join(DISTURBANCES)}")


def disturb(images: np.ndarray, *, kind: str, strength: float, rng=None) -> np.ndarray:
    """Apply one disturbance of the FID paper's soundness test.

    Parameters
    ----------
    images : ndarray, (N, C, H, W), float, [-1, 1]
    kind : {"noise", "blur", "mask"}
        ``noise``: add Gaussian noise of sigma ``strength * 0.4``; ``blur``: Gaussian blur of
        sigma ``strength * 2`` px (at 64 px, scaled with H); ``mask``: one rectangle per image
        (random centre and aspect ratio) covering ``strength * 40 %`` of the area, filled with the
        image's background (median of its 4-pixel border, per channel). See :data:`DISTURBANCES`.
    strength : float
        In [0, 1]; 0 returns a copy.
    rng : numpy.random.Generator, int or None
        Noise and rectangle placement; None means seed 0.

    Returns
    -------
    ndarray, (N, C, H, W), float32, clipped to [-1, 1]
    """
    _check_kind(kind)
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    x = np.asarray(images, np.float32)
    return _apply(x, kind=kind, strength=strength, draws=_draw(kind, x.shape, _as_rng(rng)))


def _as_rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0 if rng is None else rng)


def disturbance_curves(real_images: np.ndarray, extractor: Extractor, *,
                       kinds: Sequence[str] = ("noise", "blur", "mask"), levels: int = 4,
                       rng=None, batch: int = 256) -> dict[str, list[float]]:  # fmt: skip
    """FID between clean real images and the same images increasingly disturbed.

    The soundness test of Heusel et al. 2017: a usable extractor gives a distance that grows
    monotonically with the strength of every disturbance. One random draw (noise field,
    rectangle placement) per kind is reused at every level, so the curves measure the
    strength alone.

    Parameters
    ----------
    real_images : ndarray, (N, C, H, W), float, [-1, 1]
        N >= 2; a few hundred is enough for the trend.
    extractor : Extractor
    kinds : sequence of {"noise", "blur", "mask"}
    levels : int
        Strengths ``k / levels`` for ``k = 1..levels`` (see :func:`disturb`).
    rng : numpy.random.Generator, int or None
        None means seed 0.

    Returns
    -------
    dict
        kind -> list of ``levels`` FID values (float, squared feature units), weakest first.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    for kind in kinds:
        _check_kind(kind)
    rng = _as_rng(rng)
    x = np.asarray(real_images, np.float32)
    clean = extractor(x, batch=batch)
    curves: dict[str, list[float]] = {}
    for kind in kinds:
        draws = _draw(kind, x.shape, rng)
        curves[kind] = [
            fid_between(clean, extractor(_apply(x, kind=kind, strength=k / levels, draws=draws), batch=batch))
            for k in range(1, levels + 1)
        ]
    return curves


# ------------------------------------------------------------------------------- baselines


def _blobs(like: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Elliptical Gaussian blobs at the centre on each real image's background, scaled to the
    real set's per-channel peak level: a 'galaxy-shaped' image with no detail."""
    n, c, h, w = like.shape
    bg = _background(like)  # (n, c, 1, 1)
    peak = np.percentile(like.max(axis=(2, 3)), 50, axis=0)[None, :, None, None]  # (1, c, 1, 1)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    yy, xx = yy - (h - 1) / 2, xx - (w - 1) / 2
    s = rng.uniform(0.03, 0.12, n)[:, None, None] * h
    q = rng.uniform(0.4, 1.0, n)[:, None, None]
    th = rng.uniform(0, np.pi, n)[:, None, None]
    u = xx * np.cos(th) + yy * np.sin(th)
    v = -xx * np.sin(th) + yy * np.cos(th)
    profile = np.exp(-0.5 * (u**2 + (v / q) ** 2) / s**2)[:, None]  # (n, 1, h, w)
    return (bg + (peak - bg) * profile).astype(np.float32)


def _shuffled(like: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image's pixels permuted (one permutation for all channels): same histogram and
    colours, no structure."""
    n, c, h, w = like.shape
    flat = like.reshape(n, c, h * w)
    idx = np.argsort(rng.random((n, h * w)), axis=1)
    return np.take_along_axis(flat, idx[:, None, :], axis=2).reshape(like.shape).astype(np.float32)


def _noise(like: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with the real set's per-channel mean and standard deviation."""
    mu = like.mean(axis=(0, 2, 3), keepdims=True)
    sd = like.std(axis=(0, 2, 3), keepdims=True)
    return np.clip(mu + sd * rng.standard_normal(like.shape, dtype=np.float32), -1, 1).astype(np.float32)


BASELINES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "noise": _noise,
    "blob": _blobs,
    "shuffled": _shuffled,
}


def baseline_images(kind: str, like: np.ndarray, *, rng=None) -> np.ndarray:
    """Trivial 'generators' that any real model must beat, built to match ``like``.

    Parameters
    ----------
    kind : {"noise", "blob", "shuffled"}
        ``noise``: Gaussian noise with the real per-channel mean and std; ``blob``: a smooth
        elliptical Gaussian on each image's background; ``shuffled``: each real image's pixels
        randomly permuted.
    like : ndarray, (N, C, H, W), float, [-1, 1]
        Real images (one baseline image per real image).
    rng : numpy.random.Generator, int or None
        None means seed 0.

    Returns
    -------
    ndarray, (N, C, H, W), float32, [-1, 1]
    """
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
    return BASELINES[kind](np.asarray(like, np.float32), _as_rng(rng))
