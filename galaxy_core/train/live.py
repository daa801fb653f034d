"""Live quality evaluation during training: a Fréchet distance against cached real statistics.

The evaluator draws a fixed set of latents (so successive values are comparable), generates
``n_samples`` images with ``G_ema``, extracts features, and returns the Fréchet distance to the
real data's feature statistics (computed once per run). The metric's name records the extractor
and the sample size, e.g. ``fid_pix8_256``, so numbers from different extractors are never mixed.

Extractor ``pix8``: each band average-pooled to 8x8 pixels (C*64 features). It needs no weights,
is cheap enough to run every few hundred steps on a CPU, and tracks colour, size and
light-profile statistics; it is not a perceptual metric and not comparable to Inception FID.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from galaxy_core.data.prepared import PreparedDataset
from galaxy_core.metrics.fid import feature_statistics, frechet_distance, metric_name


def pix8_features(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, C*64) average-pooled 8x8 thumbnails."""
    return F.adaptive_avg_pool2d(x.float(), 8).flatten(1)


class LiveEvaluator:
    def __init__(self, data: PreparedDataset, *, n_samples: int, device: torch.device,
                 extractor: str = "pix8", max_real: int = 4096, batch: int = 128):
        self.n_samples, self.device, self.batch = n_samples, device, batch
        self.extract = pix8_features
        self.name = metric_name("fid", extractor=extractor, n=n_samples)
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(data), size=min(max_real, len(data)), replace=False))
        feats = [self.extract(torch.from_numpy(data.to_model_range(idx[i : i + 512])))
                 for i in range(0, len(idx), 512)]
        self.mu, self.sigma = feature_statistics(torch.cat(feats).double().numpy())

    @torch.no_grad()
    def __call__(self, G: torch.nn.Module, sample_z: Callable[[int, torch.Generator], torch.Tensor]) -> float:
        z = sample_z(self.n_samples, torch.Generator().manual_seed(2024))
        feats = []
        for i in range(0, self.n_samples, self.batch):
            feats.append(self.extract(G(z[i : i + self.batch].to(self.device)).cpu()))
        mu, sigma = feature_statistics(torch.cat(feats).double().numpy())
        return float(frechet_distance(mu, sigma, self.mu, self.sigma))


def make_live_evaluator(data: PreparedDataset, *, n_samples: int, device: torch.device) -> LiveEvaluator:
    return LiveEvaluator(data, n_samples=n_samples, device=device)
