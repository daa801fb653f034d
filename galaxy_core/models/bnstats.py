"""Batch-norm statistics for a generator's own weights.

The engine's EMA generator averages the weights of the trained one but copies its batch-norm
running statistics, which were measured with other (the live) weights. In eval mode that
mismatch shifts and rescales every normalised feature map. :func:`recalibrate` re-estimates the
statistics for the weights a network has now, from fixed inputs, as Izmailov et al. (2018),
"Averaging weights leads to wider optima and better generalization" (UAI), Sec. 3.2, do for
averaged weights. :func:`ensure_calibrated` does it only when the weights or buffers changed
since the last estimate (every in-place write bumps a tensor's version counter).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn


def state_key(net: nn.Module) -> tuple:
    """Version counters of every parameter and buffer of ``net``; changes whenever any is
    written in place (optimiser step, EMA update, ``load_state_dict``)."""
    return tuple(t._version for t in (*net.parameters(), *net.buffers()))


def batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate(net: nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    """Replace the running mean and variance of every batch norm in ``net`` by their averages
    over the batches in ``inputs`` (each passed as ``net(batch)``, in train mode). The weights
    are unchanged and ``net`` keeps its train/eval mode.

    Every batch norm is re-estimated, also one that a forward pre-hook keeps in eval mode (the
    frozen layers of a fine-tuned network, :func:`galaxy_core.train.finetune.freeze`): its
    statistics are reset like the others, so leaving it in eval mode would normalise with mean
    0 and variance 1 from then on.
    """
    bns = batch_norms(net)
    if not bns:
        return
    was_training = net.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    net.train()
    # registered last, so it runs after any hook that puts the module back in eval mode
    handles = [m.register_forward_pre_hook(_batch_statistics) for m in bns]
    try:
        for x in inputs:
            net(x)
    finally:
        for h in handles:
            h.remove()
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        net.train(was_training)


def _batch_statistics(module: nn.Module, inputs) -> None:
    module.training = True


def ensure_calibrated(net: nn.Module, inputs: Callable[[], Iterable[torch.Tensor]]) -> None:
    """For ``net`` in eval mode: :func:`recalibrate` on ``inputs()`` unless the weights and
    buffers are those of the last calibration. A network in train mode is left alone (it
    normalises with batch statistics anyway)."""
    if net.training or not batch_norms(net) or getattr(net, "_bn_calibrated", None) == state_key(net):
        return
    recalibrate(net, inputs())
    net._bn_calibrated = state_key(net)
