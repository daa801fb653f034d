"""Position GAN: stage one of the two-stage sparse-sky model (data kind ``grid``).

Following the ETH two-stage approach to sparse cosmological images (a GAN generates where the
galaxies are on a coarse grid; a second GAN draws each galaxy), this is a small DCGAN
(Radford, Metz & Chintala 2016) on one-hot grids. A grid of G x G cells has K classes per cell:
K = 2 (empty / galaxy: the unconditional model of occupancy) or K = 4 (empty / small / medium /
large: the model conditional on the size class). Real grids reach the discriminator as one-hot
maps in {-1, 1}; the generator ends in a softmax over the K classes per cell, mapped to
``2 p - 1`` so its output is a one-hot-like map in [-1, 1] of the same kind.
:func:`galaxy_core.sky.grids.sample_cells` turns it into discrete grids (argmax or a draw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from galaxy_core.models.dcgan import DCGANObjective, init_weights
from galaxy_core.models.family import Family


@dataclass
class PositionsConfig:
    resolution: int = field(default=32, metadata={"doc": "cells per side G: 16, 32 or 64 (from the data)"})
    num_classes: int = field(default=4, metadata={"doc": "classes per cell K incl. empty: 2 occupancy, 4 size classes (from the data)"})
    z_dim: int = field(default=64, metadata={"doc": "latent size; z ~ N(0, I)"})
    width: int = field(default=32, metadata={"doc": "channels at the grid end; doubled per layer towards 4x4"})
    sampled_cells: bool = field(default=False, metadata={
        "doc": "D sees grids drawn from G's per-cell class probabilities (one-hot, straight-through gradient), "
               "as the composer draws them, instead of the probability maps"})

    def __post_init__(self):
        if self.resolution not in (16, 32, 64):
            raise ValueError(f"model.resolution must be 16, 32 or 64 cells for positions, got {self.resolution}")
        if self.num_classes < 2:
            raise ValueError(f"model.num_classes must be at least 2 (empty + galaxy), got {self.num_classes}")
        if self.width < 1 or self.z_dim < 1:
            raise ValueError("model.width and model.z_dim must be positive")

    @property
    def num_layers(self) -> int:
        return int(math.log2(self.resolution)) - 2


class PositionGenerator(nn.Module):
    def __init__(self, cfg: PositionsConfig):
        super().__init__()
        self.cfg = cfg
        n = cfg.num_layers
        ch = [cfg.width * 2 ** (n - 1 - i) for i in range(n)]
        layers = [nn.ConvTranspose2d(cfg.z_dim, ch[0], 4, 1, 0, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(True)]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], cfg.num_classes, 4, 2, 1)]  # class logits per cell
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: (N, z_dim) -> (N, K, G, G) one-hot-like map 2 softmax - 1 in [-1, 1]
        logits = self.main(z.view(z.shape[0], self.cfg.z_dim, 1, 1))
        return 2 * torch.softmax(logits.float(), dim=1) - 1


class PositionDiscriminator(nn.Module):
    def __init__(self, cfg: PositionsConfig):
        super().__init__()
        n = cfg.num_layers
        ch = [cfg.width * 2**i for i in range(n)]
        layers: list[nn.Module] = [nn.Conv2d(cfg.num_classes, ch[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ch[-1], 1, 4, 1, 0, bias=False))
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, K, G, G) one-hot in {-1, 1} (real) or 2 softmax - 1 (generated) -> (N,) logits
        return self.main(x).flatten()


def straight_through_cells(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw one class per cell from a position generator's output, keeping a gradient.

    Parameters
    ----------
    maps : tensor (N, K, G, G), float in [-1, 1]
        ``2 p - 1`` of the per-cell class probabilities ``p`` (:class:`PositionGenerator`).
    generator : torch.Generator
        CPU generator for the draw (the step's, so a resumed run repeats it).

    Returns
    -------
    tensor (N, K, G, G) in {-1, 1}
        The drawn classes one-hot (as ``2 onehot - 1``, the real grids' encoding); the gradient
        flows to ``p`` as if the output were ``p`` (straight-through estimator; Bengio, Léonard &
        Courville 2013). The draw is Gumbel-max (Gumbel 1954; Jang, Gu & Poole 2017), i.e. an
        exact sample of the categorical distribution ``p`` per cell, as
        :func:`galaxy_core.sky.grids.sample_cells` draws it for the composer.
    """
    p = (maps.float() + 1) / 2
    u = torch.rand(p.shape, generator=generator).to(p.device).clamp(1e-12, 1 - 1e-7)
    idx = (torch.log(p.clamp_min(1e-12)) - torch.log(-torch.log(u))).argmax(dim=1)
    hard = nn.functional.one_hot(idx, p.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    return 2 * (hard - p.detach() + p) - 1


class PositionsObjective(DCGANObjective):
    """The DCGAN step (non-saturating BCE or hinge) on grids. With ``model.sampled_cells`` the
    discriminator sees cells drawn from the generator's class probabilities
    (:func:`straight_through_cells`) instead of the probability maps: a real grid is one-hot, so
    D can otherwise tell soft maps from real grids by their softness alone, and nothing makes the
    per-cell draws the composer makes from the maps look like real grids."""

    def shown_to_D(self, fake, ctx):
        return straight_through_cells(fake, ctx.generator) if ctx.model_cfg.sampled_cells else fake


class PositionsFamily(Family):
    name = "positions"
    config_cls = PositionsConfig
    objective_cls = PositionsObjective  # D on real/fake one-hot maps, then G (non-saturating BCE or hinge)
    data_kind = "grid"
    description = "position GAN on one-hot sky grids (two-stage sparse-sky model, ETH Zurich; DCGAN layers)"

    def build(self, cfg: PositionsConfig) -> dict[str, nn.Module]:
        return {"G": PositionGenerator(cfg), "D": PositionDiscriminator(cfg)}

    data_fields = ("resolution", "num_classes")

    def resolve_config(self, values: dict, data) -> dict:
        values = dict(values)
        values["resolution"] = data.resolution
        values["num_classes"] = int(data.manifest.get("num_classes", 2))
        return values

    def freeze_units(self, net_name, net, unit):
        return super().freeze_units(net_name, net, "layer")
