"""Fine-tuning: start from another checkpoint's weights, re-create what does not fit, freeze layers.

``--init CHECKPOINT`` loads every tensor whose network, name and shape match this model and
re-creates the rest (for example the input and output layers when RGB JPG training continues on
g/r/i FITS), reporting both lists. Freezing the first K generator layers or blocks (the StyleGAN
galaxy thesis froze 0-5 layers when moving from simulated to real galaxies) and the first K
discriminator blocks (FreezeD, Mo et al. 2020) keeps those tensors bit-identical: their
parameters get no gradient, are left out of the optimiser, and their normalisation layers stay
in eval mode so running statistics do not move. The EMA copy of a generator is not pinned so:
where a family re-estimates its sampling copy's batch-norm statistics
(:mod:`galaxy_core.models.bnstats`), those of the frozen layers are re-estimated too.

Only the source's trained networks (``G``, ``D``) are loaded, not its ``G_ema``: the EMA copy
starts as a copy of the initialised ``G``, so frozen layers are the same tensors in ``G`` and
``G_ema`` from the first step on. The EMA's warm-up (:func:`~galaxy_core.train.ema.ema_beta_at`,
beta 0.1 at step 0) would forget any start within a few steps (after 5 steps it weighs 5e-4),
so loading the source's ``G_ema`` would change only the step-0 sample grid, which therefore
shows the source's live ``G``, not the generator its card was measured with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from galaxy_core.io.checkpoint import subdict


@dataclass
class InitReport:
    source: str
    loaded: list[str] = field(default_factory=list)      # "G.main.0.weight", ...
    recreated: list[str] = field(default_factory=list)   # shape differs: freshly initialised
    missing: list[str] = field(default_factory=list)     # not in the source checkpoint

    def summary(self) -> str:
        s = f"initialised from {self.source}: {len(self.loaded)} tensors loaded"
        if self.recreated:
            s += f"; re-created (shape differs): {', '.join(self.recreated)}"
        if self.missing:
            s += f"; new (not in the checkpoint): {', '.join(self.missing)}"
        return s

    def to_dict(self) -> dict:
        return {"source": self.source, "loaded": len(self.loaded), "recreated": self.recreated, "missing": self.missing}


def load_matching(nets: Mapping[str, nn.Module], tensors: Mapping[str, torch.Tensor], *, source: str) -> InitReport:
    """Copy into each network every tensor of ``tensors`` (prefixed by the network name) whose
    name and shape match; leave the others as initialised. Returns what was done."""
    rep = InitReport(source=source)
    for name, net in nets.items():
        src = subdict(tensors, name)
        state = net.state_dict()
        new = {}
        for key, value in state.items():
            full = f"{name}.{key}"
            if key not in src:
                rep.missing.append(full)
            elif tuple(src[key].shape) != tuple(value.shape):
                rep.recreated.append(full)
            else:
                new[key] = src[key]
                rep.loaded.append(full)
        net.load_state_dict({**state, **new})
    return rep


def freeze_settings(train: Mapping) -> dict:
    """What decides which tensors a run freezes, from a train table (a config's or a
    checkpoint's): ``freeze_g``, ``freeze_d`` and, when ``freeze_g`` > 0, ``freeze_unit``."""
    out = {"freeze_g": int(train.get("freeze_g", 0)), "freeze_d": int(train.get("freeze_d", 0))}
    if out["freeze_g"]:
        out["freeze_unit"] = str(train.get("freeze_unit", "layer"))
    return out


def frozen_names(units: list[list[str]], k: int) -> list[str]:
    """State-dict names of the first ``k`` units."""
    return [name for unit in units[:k] for name in unit]


def freeze(net: nn.Module, names: list[str]) -> None:
    """Stop gradients for the named parameters and keep the named modules' buffers fixed."""
    names = set(names)
    for pname, p in net.named_parameters():
        if pname in names:
            p.requires_grad_(False)
    for mname, m in net.named_modules():
        own = [f"{mname}.{b}" if mname else b for b in m._buffers]
        if own and all(b in names for b in own):
            m.eval()
            m.register_forward_pre_hook(_stay_in_eval)  # even when the network is put in train mode


def unpin_eval(net: nn.Module) -> None:
    """Remove what :func:`freeze` added to keep modules in eval mode, from ``net`` and every
    submodule (a copy of a frozen network, e.g. its EMA copy, that must follow ``train()`` and
    ``eval()`` like any network). Gradients are left as they are."""
    for m in net.modules():
        for key in [k for k, hook in m._forward_pre_hooks.items() if hook is _stay_in_eval]:
            del m._forward_pre_hooks[key]


def _stay_in_eval(module: nn.Module, inputs) -> None:
    module.training = False
