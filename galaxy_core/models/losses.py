"""GAN losses on discriminator logits.

``bce``: the non-saturating loss of Goodfellow et al. (2014), with optional one-sided label
smoothing (Salimans et al. 2016: real targets 1 - s, fake targets 0).
``hinge``: Lim & Ye (2017), as in SAGAN/BigGAN and Lightweight GAN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    if kind == "bce":
        real_t = torch.full_like(real_logits, 1.0 - label_smoothing)
        return F.binary_cross_entropy_with_logits(real_logits, real_t) + F.binary_cross_entropy_with_logits(
            fake_logits, torch.zeros_like(fake_logits)
        )
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    raise ValueError(f"unknown loss {kind!r}")


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    if kind == "bce":  # non-saturating: maximise log D(G(z))
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"unknown loss {kind!r}")
