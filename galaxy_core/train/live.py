"""Live quality evaluation during training: FID and KID against cached real statistics.

Every ``log.eval_every`` steps the loop calls the evaluator: it generates ``n_samples`` images
from a fixed set of latents with ``G_ema`` (so successive values are comparable), extracts
features and compares them with the real data's statistics, computed once and cached on disk
(:func:`galaxy_core.metrics.features.reference_statistics`). Metric names record the extractor
and the protocol (``fid_galaxy_256v5k``: 256 generated samples against the cached statistics of
the first 5,000 real images, or all of them when there are fewer;
:func:`galaxy_core.metrics.fid.metric_name`), so numbers from different extractors or sample
sizes are never mixed. The shipped galaxy encoder is used when present; otherwise the
weight-free ``pix8`` extractor (8x8 thumbnails). The best snapshot is chosen by the FID.

Position models (data kind ``grid``) are not images, so FID does not apply: their evaluator
(:class:`GridEvaluator`) draws grids and compares their statistics with the data's
(:func:`galaxy_core.sky.grids.grid_statistics`); the best snapshot is chosen by that distance.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import torch

from galaxy_core.data.prepared import PreparedDataset
from galaxy_core.errors import CheckpointError
from galaxy_core.metrics.features import Extractor, load_extractor, reference_statistics
from galaxy_core.metrics.fid import feature_statistics, frechet_distance, kid, metric_name, parse_metric_name

#: Keys every metrics record carries about the run itself, not the model (see :mod:`galaxy_core.train.loop`).
BOOKKEEPING_KEYS = frozenset({"step", "kimg", "epoch", "time", "images_per_s", "cpu_s"})
_GRID_DISTANCE = re.compile(r"grid_distance_\d+")


def _generate(G: torch.nn.Module, sample_z: Callable[[int, torch.Generator], torch.Tensor], n: int,
              device: torch.device, batch: int) -> torch.Tensor:
    """(n, ...) float32 CPU outputs of ``G`` for the fixed evaluation latents (seed 2024 on the
    ``live`` stream of :func:`~galaxy_core.models.family.latent_generator`), so successive
    evaluations of one run see the same z."""
    from galaxy_core.models.family import latent_generator

    z = sample_z(n, latent_generator(2024, "live"))
    return torch.cat([G(z[i : i + batch].to(device)).float().cpu() for i in range(0, n, batch)])


class LiveEvaluator:
    def __init__(self, data: PreparedDataset, extractor: Extractor, *, n_samples: int,
                 device: torch.device, max_real: int = 5000, batch: int = 128):
        self.n_samples, self.device, self.batch = n_samples, device, batch
        self.extractor = extractor
        self.mu, self.sigma, self.real_feats = reference_statistics(data, extractor, max_images=max_real)
        n_real = len(self.real_feats)  # min(len(data), max_real)
        self.name = metric_name("fid", extractor=extractor.name, n=n_samples, n_real=n_real)
        self.kid_name = metric_name("kid", extractor=extractor.name, n=n_samples, n_real=n_real)

    @torch.no_grad()
    def __call__(self, G: torch.nn.Module, sample_z: Callable[[int, torch.Generator], torch.Tensor]) -> dict:
        """Metrics of ``G`` (in eval mode) as ``{fid_name: value, kid_name: value}``."""
        images = _generate(G, sample_z, self.n_samples, self.device, self.batch)
        feats = self.extractor(images)
        mu, sigma = feature_statistics(feats)
        size = min(1000, len(feats), len(self.real_feats))
        kid_mean, _ = kid(feats, self.real_feats, subsets=50, subset_size=size, rng=np.random.default_rng(0))
        return {self.name: float(frechet_distance(mu, sigma, self.mu, self.sigma)), self.kid_name: float(kid_mean)}


class GridEvaluator:
    """Live evaluation of a position model: ``n_samples`` grids from fixed latents, one class
    drawn per cell with a fixed seed (as the composer draws them), their
    :func:`galaxy_core.sky.grids.grid_statistics` against those of up to ``max_real`` grids
    of the data. Records ``grid_distance_N`` (:func:`galaxy_core.sky.grids.grid_distance`, lower is better; the
    best snapshot is chosen by it), ``grid_occupancy`` and ``grid_var_over_mean_B`` for the
    largest block size B."""

    def __init__(self, data: PreparedDataset, *, n_samples: int, device: torch.device, max_real: int = 1024,
                 batch: int = 128):
        from galaxy_core.sky.grids import grid_statistics

        self.n_samples, self.device, self.batch = n_samples, device, batch
        real = np.asarray(data.images[: min(len(data), max_real)])[:, 0].astype(np.int64)
        self.data_stats = grid_statistics(real)
        self.name = f"grid_distance_{n_samples}"

    @torch.no_grad()
    def __call__(self, G: torch.nn.Module, sample_z: Callable[[int, torch.Generator], torch.Tensor]) -> dict:
        from galaxy_core.sky.grids import grid_distance, grid_statistics, sample_cells

        out = _generate(G, sample_z, self.n_samples, self.device, self.batch)
        cells = sample_cells(out.numpy(), mode="sample", rng=np.random.default_rng(2024))
        stats = grid_statistics(cells)
        b = max(stats["var_over_mean"])
        return {self.name: grid_distance(stats, self.data_stats), "grid_occupancy": stats["occupancy"],
                f"grid_var_over_mean_{b}": stats["var_over_mean"][b]}


def is_quality_metric(key: str) -> bool:
    """True for the name of a live quality metric, where lower is better: FID, KID and FD names
    made by :func:`galaxy_core.metrics.fid.metric_name` (``fid_galaxy_256v5k``, and the older
    ``fid_pix8_256``) and a position model's ``grid_distance_N``. Everything else a record holds
    (losses, learning rates, ``cpu_s``, BEGAN's ``k_t`` and ``M_global``, ``grid_occupancy``,
    ADA's ``augment_p``) is not a quality metric."""
    return parse_metric_name(key) is not None or _GRID_DISTANCE.fullmatch(key) is not None


def split_record_keys(records: list[dict]) -> tuple[list[str], list[str]]:
    """``(quality, statistics)``: the sorted numeric keys of metrics records (as
    :meth:`galaxy_core.train.run.RunFolder.read_metrics` returns them) that are live quality metrics
    (:func:`is_quality_metric`), and the other per-family training statistics (BEGAN's ``k_t``,
    ``M_global``, ``L_real``, ``L_fake``; ``augment_p``; ``grid_occupancy``, ...). Left out of both:
    :data:`BOOKKEEPING_KEYS`, ``loss_*``, ``lr_*`` and the discriminator outputs ``D_x``/``D_G_z``."""
    numeric = {k for r in records for k, v in r.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    quality = sorted(k for k in numeric if is_quality_metric(k))
    other = sorted(k for k in numeric - set(quality) - BOOKKEEPING_KEYS - {"D_x", "D_G_z"}
                   if not k.startswith(("loss_", "lr_")))
    return quality, other


def make_live_evaluator(data: PreparedDataset, *, n_samples: int, device: torch.device,
                        extractor: str = "auto") -> LiveEvaluator | GridEvaluator:
    """Evaluator with the named extractor; ``auto`` is the shipped galaxy encoder, else pix8.
    For grid data (position models) a :class:`GridEvaluator` (the extractor is not used)."""
    if data.description().get("kind") == "grid":
        return GridEvaluator(data, n_samples=n_samples, device=device)
    if extractor == "auto":
        try:
            ext = load_extractor("galaxy", device=device)
        except CheckpointError:
            ext = load_extractor("pix8", device=device)
    else:
        ext = load_extractor(extractor, device=device)
    return LiveEvaluator(data, ext, n_samples=n_samples, device=device)
