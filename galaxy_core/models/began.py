"""BEGAN: Boundary Equilibrium GAN (Berthelot, Schumm & Metz 2017, arXiv:1703.10717).

Stage two of the two-stage sparse-sky model: one galaxy per occupied grid cell, on 32 x 32
patches, unconditional (``began``) or conditional on the size class (``began_cond``, data
kind ``label``; classes small / medium / large from the ``hdf`` catalogue).

The discriminator is an auto-encoder; a sample's loss is its mean L1 reconstruction error
``L(v) = mean |v - D(v)|``. With the equilibrium ratio ``gamma = E[L(G(z))] / E[L(x)]``:

    L_D = L(x) - k_t L(G(z_D))                       (discriminator)
    L_G = L(G(z_G))                                  (generator)
    k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1)   (proportional control)
    M_global = L(x) + |gamma L(x) - L(G(z_G))|        (convergence measure, logged)

Networks (paper section 3.4, scaled to 32 px): the decoder (and generator, same shape) maps
``h`` through a fully connected layer to ``n x 8 x 8``, then blocks of two 3 x 3 convolutions
with ELU and a nearest-neighbour upsampling, to a 3 x 3 convolution to the bands; the encoder
mirrors it with stride-2 convolutions for subsampling and ends in a fully connected layer to
``h``. Outputs end in tanh so images stay in [-1, 1] (the paper leaves them linear). The
conditional variant concatenates a one-hot label to ``z`` (generator), to ``h`` (decoder) and
as constant planes to the encoder input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galaxy_core.models.family import Family, Objective, Phase

SIZE_CLASSES = ("small", "medium", "large")  # label 0, 1, 2 = grid classes 1, 2, 3


@dataclass
class BEGANConfig:
    resolution: int = field(default=32, metadata={"doc": "output side in pixels: 32 or 64 (from the data)"})
    num_bands: int = field(default=3, metadata={"doc": "output channels (from the data)"})
    z_dim: int = field(default=64, metadata={"doc": "latent size; z ~ U(-1, 1) as in the paper"})
    h_dim: int = field(default=64, metadata={"doc": "auto-encoder bottleneck size (paper: N_h = N_z)"})
    width: int = field(default=32, metadata={"doc": "channels n of every convolution (paper: 64 or 128)"})
    num_classes: int = field(default=0, metadata={"doc": "size classes for began_cond (3); 0 = unconditional"})
    gamma: float = field(default=0.5, metadata={"doc": "equilibrium ratio E[L(G(z))] / E[L(x)] in (0, 1]; lower = sharper, less diverse"})
    lambda_k: float = field(default=0.001, metadata={"doc": "proportional gain of the k_t control"})
    k_init: float = field(default=0.0, metadata={"doc": "k_0 in [0, 1]"})

    def __post_init__(self):
        if self.resolution not in (32, 64):
            raise ValueError(f"model.resolution must be 32 or 64 for began, got {self.resolution}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"model.gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.k_init <= 1:
            raise ValueError(f"model.k_init must be in [0, 1], got {self.k_init}")
        if self.lambda_k < 0 or self.width < 1 or self.z_dim < 1 or self.h_dim < 1 or self.num_classes < 0:
            raise ValueError("model.lambda_k, width, z_dim, h_dim and num_classes must not be negative")

    @property
    def num_up(self) -> int:
        return int(math.log2(self.resolution)) - 3  # 8 x 8 -> resolution


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, 1, 1), nn.ELU(), nn.Conv2d(c_out, c_out, 3, 1, 1), nn.ELU()]


class Decoder(nn.Module):
    """(N, in_dim) -> (N, num_bands, R, R) in [-1, 1]; also the generator."""

    def __init__(self, cfg: BEGANConfig, in_dim: int):
        super().__init__()
        n = cfg.width
        self.n = n
        self.fc = nn.Linear(in_dim, n * 8 * 8)
        layers: list[nn.Module] = []
        for _ in range(cfg.num_up):
            layers += _block(n, n) + [nn.Upsample(scale_factor=2, mode="nearest")]
        layers += _block(n, n) + [nn.Conv2d(n, cfg.num_bands, 3, 1, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.main(self.fc(h).view(-1, self.n, 8, 8))


class Encoder(nn.Module):
    """(N, in_ch, R, R) -> (N, h_dim)."""

    def __init__(self, cfg: BEGANConfig, in_ch: int):
        super().__init__()
        n = cfg.width
        layers: list[nn.Module] = [nn.Conv2d(in_ch, n, 3, 1, 1), nn.ELU()]
        for i in range(cfg.num_up):
            c, c_next = n * (i + 1), n * (i + 2)  # widths grow linearly (paper: n, 2n, 3n, ...)
            layers += _block(c, c) + [nn.Conv2d(c, c_next, 3, 2, 1), nn.ELU()]
        c = n * (cfg.num_up + 1)
        layers += _block(c, c)
        self.main = nn.Sequential(*layers)
        self.fc = nn.Linear(c * 8 * 8, cfg.h_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.main(x).flatten(1))


def _one_hot(labels: torch.Tensor | None, k: int, like: torch.Tensor) -> torch.Tensor | None:
    if k == 0:
        return None
    if labels is None:  # no labels given (a caller that knows only z): cycle through the classes, as
        labels = torch.arange(len(like), device=like.device) % k  # Pretrained.generate does by default
    return F.one_hot(labels.long(), k).to(like.dtype)


class Generator(nn.Module):
    def __init__(self, cfg: BEGANConfig):
        super().__init__()
        self.cfg = cfg
        self.dec = Decoder(cfg, cfg.z_dim + cfg.num_classes)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # z: (N, z_dim) in [-1, 1], labels (N,) int -> (N, C, R, R) in [-1, 1]
        y = _one_hot(labels, self.cfg.num_classes, z)
        return self.dec(z if y is None else torch.cat([z, y], 1))


class AutoEncoder(nn.Module):
    """BEGAN discriminator: reconstructs its input."""

    def __init__(self, cfg: BEGANConfig):
        super().__init__()
        self.cfg = cfg
        self.enc = Encoder(cfg, cfg.num_bands + cfg.num_classes)
        self.dec = Decoder(cfg, cfg.h_dim + cfg.num_classes)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, C, R, R) -> reconstruction (N, C, R, R)
        y = _one_hot(labels, self.cfg.num_classes, x)
        if y is None:
            return self.dec(self.enc(x))
        planes = y[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        h = self.enc(torch.cat([x, planes], 1))
        return self.dec(torch.cat([h, y], 1))


def recon_loss(D: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """L(v) = mean |v - D(v)| over the batch (scalar)."""
    return (x - D(x, labels)).abs().mean()


def k_update(k: float, loss_real: float, loss_fake: float, *, gamma: float, lambda_k: float) -> float:
    """k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1) (Berthelot et al. eq. 4)."""
    return float(min(max(k + lambda_k * (gamma * loss_real - loss_fake), 0.0), 1.0))


def convergence_measure(loss_real: float, loss_fake: float, *, gamma: float) -> float:
    """M_global = L(x) + |gamma L(x) - L(G(z))| (Berthelot et al. section 3.3)."""
    return float(loss_real + abs(gamma * loss_real - loss_fake))


class BEGANObjective(Objective):
    """D phase (``L_D = L(x) - k_t L(G(z))``), then G phase (``L_G = L(G(z))``) and the k_t update.

    Statistics: ``loss_D``, ``loss_G``, ``L_real``, ``L_fake``, ``k_t`` (after the update) and
    ``M_global``. ``k_t`` is in :meth:`state_dict`, so a resumed run continues exactly.
    """

    phases = (Phase("D", optimizer="D"), Phase("G", optimizer="G"))

    def __init__(self, model_cfg, train_cfg, nets):
        super().__init__(model_cfg, train_cfg, nets)
        self.k = float(model_cfg.k_init)

    def state_dict(self) -> dict:
        return {"k_t": self.k}

    def load_state_dict(self, state) -> None:
        self.k = float(state.get("k_t", self.model_cfg.k_init))

    def begin_step(self, batch, ctx):
        ctx.stash["z"] = ctx.sample_latents(ctx.batch_size)

    def run(self, phase, batch, ctx):
        G, D, cfg = self.nets["G"], self.nets["D"], self.model_cfg
        labels = batch.get("label")
        if labels is not None:
            labels = labels.to(ctx.device)
        if phase == "D":
            fake = G(ctx.stash["z"], labels)
            ctx.stash["fake"] = fake
            real = ctx.augment(batch["image"])
            loss_real = recon_loss(D, real.float(), labels)
            loss_fake = recon_loss(D, ctx.augment(fake.detach()).float(), labels)
            ctx.stash["L_real"] = float(loss_real.detach())
            loss = loss_real - self.k * loss_fake
            return loss, {"loss_D": loss.detach(), "L_real": loss_real.detach()}
        loss_g = recon_loss(D, ctx.augment(ctx.stash["fake"]).float(), labels)
        l_real, l_fake = ctx.stash["L_real"], float(loss_g.detach())
        m = convergence_measure(l_real, l_fake, gamma=cfg.gamma)
        self.k = k_update(self.k, l_real, l_fake, gamma=cfg.gamma, lambda_k=cfg.lambda_k)
        dev = loss_g.device  # statistics beside the losses, on the networks' device
        return loss_g, {"loss_G": loss_g.detach(), "L_fake": loss_g.detach(),
                        "k_t": torch.tensor(self.k, device=dev), "M_global": torch.tensor(m, device=dev)}


class BEGANFamily(Family):
    name = "began"
    config_cls = BEGANConfig
    objective_cls = BEGANObjective
    data_kind = "image"
    description = "BEGAN, auto-encoder discriminator with equilibrium control (Berthelot et al. 2017)"

    def build(self, cfg: BEGANConfig) -> dict[str, nn.Module]:
        return {"G": Generator(cfg), "D": AutoEncoder(cfg)}

    def sample_latents(self, cfg, n, *, generator=None):
        return torch.rand(n, int(cfg.z_dim), generator=generator) * 2 - 1  # U(-1, 1)

    def num_classes(self, cfg) -> int:
        return int(cfg.num_classes)

    def generate(self, nets, latents, *, labels=None, psi=1.0, noise_mode="const", refs=None):
        k = int(nets["G"].cfg.num_classes)
        if k and labels is None:  # cycle through the size classes
            labels = torch.arange(len(latents), device=latents.device) % k
        return nets["G"](latents, labels)


class BEGANCondFamily(BEGANFamily):
    name = "began_cond"
    data_kind = "label"
    description = "BEGAN conditional on the galaxy size class (small/medium/large; Berthelot et al. 2017)"

    def resolve_config(self, values, data):
        values = super().resolve_config(values, data)
        values["num_classes"] = len(SIZE_CLASSES)
        return values

    def class_names(self, cfg) -> tuple[str, ...]:
        return SIZE_CLASSES[: int(cfg.num_classes)]

    def dataset_labels(self, cfg, data):
        """Size class of each stamp: 0 small, 1 medium, 2 large (the catalogue's ``size_class``)."""
        cat = data.catalog
        if cat is None or "size_class" not in cat.colnames:
            from galaxy_core.errors import ConfigError

            raise ConfigError(f"{data.name}: began_cond needs a 'size_class' column in the dataset catalogue "
                              "(the built-in hdf data has one)")
        names = np.asarray(cat["size_class"]).astype(str)
        return np.array([SIZE_CLASSES.index(s) for s in names], np.int64)
