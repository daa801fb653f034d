"""Exponential moving average of generator weights (Karras et al. 2018; Yazici et al. 2019)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from galaxy_core.train.finetune import unpin_eval


def make_ema(G: nn.Module) -> nn.Module:
    """A copy of ``G`` for sampling: eval mode, no gradients, and none of the hooks that keep
    frozen layers of ``G`` in eval mode (:func:`~galaxy_core.train.finetune.freeze`): the copy
    never trains, and re-estimating its batch-norm statistics
    (:func:`~galaxy_core.models.bnstats.recalibrate`) puts every layer in train mode."""
    G_ema = copy.deepcopy(G).eval()
    unpin_eval(G_ema)
    for p in G_ema.parameters():
        p.requires_grad_(False)
    return G_ema


def ema_beta_at(beta: float, step: int) -> float:
    """Decay with warm-up, ``min(beta, (1 + step) / (10 + step))``, so early averages are not
    dominated by the random initial weights."""
    return min(beta, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    """``G_ema <- beta * G_ema + (1 - beta) * G``; buffers (batch-norm statistics) are copied."""
    ema_p = list(G_ema.parameters())
    torch._foreach_lerp_(ema_p, [p.detach() for p in G.parameters()], 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
