"""DCGAN (Radford, Metz & Chintala 2016) as used for galaxies in the chained-GAN MNRAS paper.

Generator: 100-d Gaussian noise -> transposed convolutions (kernel 4, stride 2) with batch norm
and ReLU -> tanh. Discriminator: strided convolutions with batch norm and LeakyReLU(0.2) ->
one logit. Widths double per layer towards the 4x4 end; ``width`` is the channel count at the
image end (the paper compared 32/64/128). Resolutions 32, 64 and 128 (128 adds a layer).
Weights are initialised N(0, 0.02) (batch-norm scales N(1, 0.02)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from galaxy_core.models.family import Family, Objective, Phase
from galaxy_core.models.losses import d_loss, g_loss


@dataclass
class DCGANConfig:
    resolution: int = field(default=64, metadata={"doc": "output side in pixels: 32, 64 or 128 (from the data)"})
    num_bands: int = field(default=3, metadata={"doc": "output channels: 3 for RGB or g/r/i, 1 for grayscale (from the data)"})
    z_dim: int = field(default=100, metadata={"doc": "latent size; z ~ N(0, I)"})
    width: int = field(default=64, metadata={"doc": "channels at the image end; doubled per layer towards 4x4"})
    d_dropout: float = field(default=0.0, metadata={"doc": "dropout after each hidden discriminator block, [0, 1) (0 = off)"})

    def __post_init__(self):
        if self.resolution not in (32, 64, 128):
            raise ValueError(f"model.resolution must be 32, 64 or 128 for dcgan, got {self.resolution}")
        if self.width < 1 or self.z_dim < 1 or self.num_bands < 1:
            raise ValueError("model.width, model.z_dim and model.num_bands must be positive")
        if not 0 <= self.d_dropout < 1:
            raise ValueError(f"model.d_dropout must be in [0, 1), got {self.d_dropout}")

    @property
    def num_layers(self) -> int:
        """Number of stride-2 stages between 4x4 and the output."""
        return int(math.log2(self.resolution)) - 2


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), batch-norm scale N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        n = cfg.num_layers
        ch = [cfg.width * 2 ** (n - 1 - i) for i in range(n)]  # e.g. 8w, 4w, 2w, w for 64 px
        layers = [
            nn.ConvTranspose2d(cfg.z_dim, ch[0], 4, 1, 0, bias=False),  # (N, 8w, 4, 4)
            nn.BatchNorm2d(ch[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], cfg.num_bands, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: (N, z_dim) -> (N, num_bands, R, R) in [-1, 1]
        return self.main(z.view(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        n = cfg.num_layers
        ch = [cfg.width * 2**i for i in range(n)]  # w, 2w, 4w, 8w for 64 px
        layers: list[nn.Module] = [nn.Conv2d(cfg.num_bands, ch[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
            if cfg.d_dropout > 0:
                layers.append(nn.Dropout(cfg.d_dropout))
        layers.append(nn.Conv2d(ch[-1], 1, 4, 1, 0, bias=False))  # (N, 1, 1, 1)
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, num_bands, R, R) in [-1, 1] -> (N,) logits; sigmoid gives P(real)
        return self.main(x).flatten()


class DCGANObjective(Objective):
    """One discriminator step on real and generated images, then one generator step.

    The generator output is computed once (in the D phase) and reused by the G phase, as in the
    reference DCGAN training step. Loss ``train.loss``: ``bce`` (non-saturating, with optional
    one-sided label smoothing) or ``hinge``. Statistics: ``loss_D``, ``loss_G``, ``D_x`` and
    ``D_G_z`` (mean sigmoid of the logits on real and generated images).
    """

    phases = (Phase("D", optimizer="D"), Phase("G", optimizer="G"))

    def begin_step(self, batch, ctx):
        ctx.stash["z"] = ctx.sample_latents(ctx.batch_size)

    def shown_to_D(self, fake: torch.Tensor, ctx) -> torch.Tensor:
        """What the discriminator (and the generator's loss) sees of ``G(z)``: ``G(z)`` itself
        (a family may override, e.g. to draw discrete grids from it)."""
        return fake

    def run(self, phase, batch, ctx):
        G, D, t = self.nets["G"], self.nets["D"], self.train_cfg
        if phase == "D":
            fake = self.shown_to_D(G(ctx.stash["z"]), ctx)  # (N, C, H, W) in [-1, 1]
            ctx.stash["fake"] = fake
            real_logits = D(ctx.augment(batch["image"]))
            fake_logits = D(ctx.augment(fake.detach()))
            ctx.observe_real_logits(real_logits)
            loss = d_loss(t.loss, real_logits.float(), fake_logits.float(), label_smoothing=t.label_smoothing)
            return loss, {"loss_D": loss.detach(),
                          "D_x": torch.sigmoid(real_logits.detach().float()).mean(),
                          "D_G_z": torch.sigmoid(fake_logits.detach().float()).mean()}
        fake_logits = D(ctx.augment(ctx.stash["fake"]))
        loss = g_loss(t.loss, fake_logits.float())
        return loss, {"loss_G": loss.detach()}


class DCGANFamily(Family):
    name = "dcgan"
    config_cls = DCGANConfig
    objective_cls = DCGANObjective
    description = "DCGAN, 100-d noise, transposed convolutions (Radford et al. 2016)"

    def build(self, cfg: DCGANConfig) -> dict[str, nn.Module]:
        return {"G": Generator(cfg), "D": Discriminator(cfg)}

    def build_G(self, cfg: DCGANConfig) -> nn.Module:
        return Generator(cfg)

    def build_D(self, cfg: DCGANConfig) -> nn.Module:
        return Discriminator(cfg)

    def freeze_units(self, net_name, net, unit):
        # A layer and a block are the same here: convolution + batch norm (+ activation).
        return super().freeze_units(net_name, net, "layer")
