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
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from galaxy_core.data.prepared import PreparedDataset
from galaxy_core.errors import CheckpointError
from galaxy_core.metrics.features import Extractor, load_extractor, reference_statistics
from galaxy_core.metrics.fid import feature_statistics, frechet_distance, kid, metric_name


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
        z = sample_z(self.n_samples, torch.Generator().manual_seed(2024))
        images = torch.cat([G(z[i : i + self.batch].to(self.device)).float().cpu()
                            for i in range(0, self.n_samples, self.batch)])
        feats = self.extractor(images)
        mu, sigma = feature_statistics(feats)
        size = min(1000, len(feats), len(self.real_feats))
        kid_mean, _ = kid(feats, self.real_feats, subsets=50, subset_size=size, rng=np.random.default_rng(0))
        return {self.name: float(frechet_distance(mu, sigma, self.mu, self.sigma)), self.kid_name: float(kid_mean)}


def make_live_evaluator(data: PreparedDataset, *, n_samples: int, device: torch.device,
                        extractor: str = "auto") -> LiveEvaluator:
    """Evaluator with the named extractor; ``auto`` is the shipped galaxy encoder, else pix8."""
    if extractor == "auto":
        try:
            ext = load_extractor("galaxy", device=device)
        except CheckpointError:
            ext = load_extractor("pix8", device=device)
    else:
        ext = load_extractor(extractor, device=device)
    return LiveEvaluator(data, ext, n_samples=n_samples, device=device)
