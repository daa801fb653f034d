"""StyleGAN2-like generator and residual discriminator for galaxy images.

After Karras, Laine & Aila (2019), "A Style-Based Generator Architecture for Generative
Adversarial Networks" (mapping network, styles, noise inputs, truncation, style mixing) and
Karras et al. (2020), "Analyzing and Improving the Image Quality of StyleGAN" (StyleGAN2:
weight demodulation, skip toRGB outputs, residual discriminator, lazy R1, path-length
regularisation). Written for this project from the papers; the names follow the field
(``z_dim``, ``w_dim``, ``num_ws``, ``w_avg``, ``psi``).

Generator ``G`` = ``mapping`` (z -> w) + ``synthesis`` (w per layer -> image):

- mapping: z normalised to unit second moment, then ``mapping_layers`` fully connected layers of
  width ``w_dim`` with leaky ReLU; its learning rate is ``mapping_lr_mult`` (0.01) times the
  generator's (an optimiser parameter group with ``lr_mult``, applied by the loop's schedule).
  ``w_avg`` tracks the mean w (decay ``w_avg_beta``) for the truncation trick
  ``w' = w_avg + psi (w - w_avg)``.
- synthesis: a learned 4x4 constant; per resolution block an optional 2x upsampling (bilinear),
  two 3x3 modulated convolutions (per-layer affine style of w scales the input channels; weight
  demodulation normalises each output channel), per-pixel noise (one map per layer) with a
  learned per-channel strength, bias and leaky ReLU; each block has a 1x1 modulated toRGB (to ``num_bands``) whose
  outputs are upsampled and summed (skip architecture). The 4x4 block has one convolution.
- Every styled layer (convolutions and toRGBs) takes its own w, so ``num_ws`` = number of styled
  layers (StyleGAN2 lets a toRGB share the w of the next block's first convolution; keeping
  them separate means a per-layer mask says exactly which layers get which style).

All weights use the equalised learning rate (stored N(0, 1), scaled by ``1/sqrt(fan_in)`` at run
time; Karras et al. 2018). Outputs are not squashed during training (as in StyleGAN);
:meth:`StyleGANFamily.generate` clamps them to [-1, 1].

Discriminator ``D``: fromRGB (1x1), residual blocks (two 3x3 convolutions, 2x average-pool
downsampling, 1x1 skip, sum scaled by 1/sqrt(2)) down to 4x4, minibatch standard deviation
(Karras et al. 2018), a 3x3 convolution, and two fully connected layers to one logit.

Objective (``loss``): ``logistic`` = non-saturating logistic loss with lazy R1 on reals
(Mescheder et al. 2018) every ``r1_every`` steps, scaled by ``r1_every``, with the Adam
lr/betas adjustment of lazy regularisation; ``wgan-gp`` = Wasserstein loss with gradient penalty
(Gulrajani et al. 2017) and the small drift term of Karras et al. (2018), the objective of the
StyleGAN galaxy thesis. Style-mixing regularisation with probability ``style_mixing_prob``;
optional lazy path-length regularisation (``pl_weight`` > 0) whose running mean is saved with
the objective's state. No progressive growing (see ``docs/families/stylegan.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from galaxy_core.models.family import Family, Objective, Phase

RESOLUTIONS = (32, 64, 128, 256)
LOSSES = ("logistic", "wgan-gp")
NOISE_MODES = ("const", "random", "none")
LRELU_GAIN = math.sqrt(2.0)
# memory format of G's and D's activations; channels-last makes oneDNN's CPU convolutions
# 1.5-4x faster at the few channels of the high-resolution layers (benchmarks/bench_stylegan.py)
MEMORY_FORMAT = torch.channels_last


@dataclass
class StyleGANConfig:
    resolution: int = field(default=64, metadata={"doc": "output side in pixels: 32, 64, 128 or 256 (from the data)"})
    num_bands: int = field(default=3, metadata={"doc": "output channels (bands), from the data"})
    z_dim: int = field(default=512, metadata={"doc": "input latent size; z ~ N(0, I)"})
    w_dim: int = field(default=512, metadata={"doc": "intermediate latent (style) size"})
    mapping_layers: int = field(default=8, metadata={"doc": "fully connected layers of the mapping network z -> w"})
    mapping_lr_mult: float = field(default=0.01, metadata={"doc": "learning-rate multiplier of the mapping network"})
    w_avg_beta: float = field(default=0.995, metadata={"doc": "decay of the tracked mean w (truncation centre)"})
    channel_base: int = field(default=16384, metadata={"doc": "channels at resolution r are min(channel_base / r, channel_max)"})
    channel_max: int = field(default=512, metadata={"doc": "most channels of any layer (G and D)"})
    mbstd_group: int = field(default=4, metadata={"doc": "minibatch-stddev group size in D (0 = off)"})
    loss: str = field(default="logistic", metadata={"doc": "'logistic' (non-saturating + lazy R1) or 'wgan-gp' (the galaxy thesis)"})
    r1_gamma: float = field(default=1.0, metadata={"doc": "logistic: R1 weight gamma (penalty gamma/2 E|grad D(x)|^2)"})
    r1_every: int = field(default=16, metadata={"doc": "logistic: steps between lazy R1 phases"})
    gp_lambda: float = field(default=10.0, metadata={"doc": "wgan-gp: gradient-penalty weight"})
    gp_drift: float = field(default=0.001, metadata={"doc": "wgan-gp: weight of E[D(x)^2] on reals"})
    style_mixing_prob: float = field(default=0.9, metadata={"doc": "probability of training a batch with two mixed w"})
    pl_weight: float = field(default=0.0, metadata={"doc": "path-length regularisation weight (0 = off; 2 in StyleGAN2)"})
    pl_every: int = field(default=4, metadata={"doc": "steps between lazy path-length phases"})
    pl_decay: float = field(default=0.01, metadata={"doc": "decay of the running mean path length"})
    pl_batch_shrink: int = field(default=2, metadata={"doc": "path-length phase uses batch_size / pl_batch_shrink"})

    def __post_init__(self):
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"model.resolution must be one of {RESOLUTIONS} for stylegan, got {self.resolution}")
        for name in ("num_bands", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max",
                     "r1_every", "pl_every", "pl_batch_shrink"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.loss not in LOSSES:
            raise ValueError(f"model.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0 <= self.style_mixing_prob <= 1:
            raise ValueError(f"model.style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")
        if self.mbstd_group < 0 or self.mapping_lr_mult <= 0:
            raise ValueError("model.mbstd_group must be >= 0 and model.mapping_lr_mult > 0")

    def channels(self, res: int) -> int:
        return max(int(min(self.channel_base // res, self.channel_max)), 1)

    @property
    def block_resolutions(self) -> list[int]:
        """4, 8, ..., resolution."""
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]


# ---------------------------------------------------------------------------------------------
# equalised-learning-rate layers (Karras et al. 2018, section 4.1)


class EqLinear(nn.Module):
    """Fully connected layer with run-time weight scaling ``1/sqrt(in)``; optional leaky ReLU."""

    def __init__(self, in_features: int, out_features: int, *, bias_init: float = 0.0, act: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.gain = 1.0 / math.sqrt(in_features)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.gain, self.bias)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.act else x


class EqConv2d(nn.Module):
    """Convolution (same padding) with run-time weight scaling; optional 2x average-pool down
    before it, bias and leaky ReLU (discriminator layers)."""

    def __init__(self, c_in: int, c_out: int, k: int, *, bias: bool = True, act: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.gain = 1.0 / math.sqrt(c_in * k * k)
        self.act, self.down, self.pad = act, down, k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        x = F.conv2d(x, self.weight * self.gain, self.bias, padding=self.pad)
        return F.leaky_relu(x, 0.2) * LRELU_GAIN if self.act else x


# ---------------------------------------------------------------------------------------------
# generator


class MappingNetwork(nn.Module):
    """z (N, z_dim) -> w (N, w_dim); tracks ``w_avg`` while training."""

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        dims = [cfg.z_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.net = nn.Sequential(*[EqLinear(a, b, act=True) for a, b in zip(dims[:-1], dims[1:])])
        for p in self.net.parameters():
            p.lr_mult = cfg.mapping_lr_mult  # read by StyleGANFamily.optimizers
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.w_avg_beta = cfg.w_avg_beta

    def forward(self, z: torch.Tensor, *, psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)  # unit second moment
        w = self.net(z)  # (N, w_dim)
        if update_w_avg and self.training:
            self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if psi != 1.0:
            w = self.w_avg.to(w.dtype).lerp(w, psi)
        return w


class ModulatedConv(nn.Module):
    """One styled layer: modulated k x k convolution (+ noise, bias, leaky ReLU for k = 3).

    Modulation and demodulation are applied to the activations rather than the weights
    (``x * s`` -> shared convolution -> ``* d``), which is equal to convolving with the
    per-sample weight ``w'_oik = s_i w_oik d_o`` of StyleGAN2 (eq. 1-3) and cheaper on a CPU.

    Parameters
    ----------
    c_in, c_out : int
    w_dim : int
    k : int
        3 for a convolution layer (demodulated, with noise), 1 for a toRGB layer (neither).
    resolution : int
        Output side in pixels (the noise map's size).
    up : bool
        Bilinear 2x upsampling of the input first.
    """

    def __init__(self, c_in: int, c_out: int, w_dim: int, *, k: int, resolution: int, up: bool = False):
        super().__init__()
        self.affine = EqLinear(w_dim, c_in, bias_init=1.0)  # w -> per-input-channel style s
        self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.gain = 1.0 / math.sqrt(c_in * k * k)
        self.up, self.k, self.resolution = up, k, resolution
        self.is_rgb = k == 1
        if not self.is_rgb:
            self.noise_strength = nn.Parameter(torch.zeros(c_out))  # per channel (StyleGAN v1, Fig. 1b)
            self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str = "random",
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, c_in, r', r'), w: (N, w_dim) -> (N, c_out, r, r); noise (1 or N, 1, r, r) overrides noise_mode
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        s = self.affine(w)  # (N, c_in)
        weight = self.weight * self.gain
        x = x * s[:, :, None, None].to(x.dtype)
        x = F.conv2d(x, weight.to(x.dtype), padding=self.k // 2)
        if self.is_rgb:
            return x + self.bias.to(x.dtype)[None, :, None, None]
        d = torch.rsqrt(s.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)  # (N, c_out)
        x = x * d[:, :, None, None].to(x.dtype)
        strength = self.noise_strength.to(x.dtype)[None, :, None, None]
        if noise is not None:
            x = x + noise.to(x.dtype) * strength
        elif noise_mode == "random":
            n = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], generator=generator).to(x.device, x.dtype)
            x = x + n * strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * strength
        return F.leaky_relu(x + self.bias.to(x.dtype)[None, :, None, None], 0.2) * LRELU_GAIN


class SynthesisBlock(nn.Module):
    """One resolution: (upsample +) conv0, conv1 and toRGB; the 4x4 block has conv1 only."""

    def __init__(self, cfg: StyleGANConfig, res: int):
        super().__init__()
        c_in, c_out = cfg.channels(max(res // 2, 4)), cfg.channels(res)
        self.res = res
        if res > 4:
            self.conv0 = ModulatedConv(c_in, c_out, cfg.w_dim, k=3, resolution=res, up=True)
        self.conv1 = ModulatedConv(c_out, c_out, cfg.w_dim, k=3, resolution=res)
        self.torgb = ModulatedConv(c_out, cfg.num_bands, cfg.w_dim, k=1, resolution=res)

    @property
    def layer_names(self) -> list[str]:
        return (["conv0"] if self.res > 4 else []) + ["conv1", "torgb"]


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> image (N, num_bands, R, R).

    ``layers`` lists the styled layers in the order of their w index as
    ``(name, resolution, kind)`` with kind ``"conv"`` or ``"rgb"``.
    """

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.const = nn.Parameter(torch.randn(cfg.channels(4), 4, 4))
        self.blocks = nn.ModuleDict({f"b{r}": SynthesisBlock(cfg, r) for r in cfg.block_resolutions})
        self.layers = layer_table(cfg)
        self.num_ws = len(self.layers)

    @property
    def noise_layers(self) -> list[str]:
        """Names of the layers with a noise input (the 3x3 convolutions), in order."""
        return [name for name, _, kind in self.layers if kind == "conv"]

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "const", generator: torch.Generator | None = None,
                noise: list[torch.Tensor] | None = None, share_prefixes: bool = False) -> torch.Tensor:
        """``noise``: one map (1 or N, 1, r, r) per entry of :attr:`noise_layers`, overriding
        ``noise_mode`` (used by projection, which optimises them).

        ``share_prefixes``: images whose ws agree on layers 0..i have equal activations up to
        layer i (with ``const`` or ``none`` noise), so each layer runs once per distinct prefix and
        the result is copied out where the prefixes part. A style-mixing grid computes the layers
        before the first mixed one once per source instead of once per cell (the same images,
        up to float rounding). Ignored with ``random`` noise or explicit ``noise``."""
        if noise is not None and len(noise) != len(self.noise_layers):
            raise ValueError(f"noise must hold {len(self.noise_layers)} maps, got {len(noise)}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must be (n, {self.num_ws}, w_dim), got {tuple(ws.shape)}")
        share = share_prefixes and noise is None and noise_mode != "random"
        groups = prefix_groups(ws) if share else None
        n0 = int(groups[0].max()) + 1 if share else ws.shape[0]
        # channels-last activations: oneDNN's convolutions on a CPU are 1.5-4x faster for the few
        # channels at high resolution (the same function; the loop only sets it on CUDA)
        x = self.const.unsqueeze(0).expand(n0, -1, -1, -1).to(ws.dtype)
        x = x.contiguous(memory_format=MEMORY_FORMAT)
        img, i, j = None, 0, 0
        for block in self.blocks.values():
            for name in block.layer_names:
                layer = getattr(block, name)
                if share:
                    first = _first_index(groups[i])  # one image per group of layer i
                    if i and len(first) > x.shape[0]:  # prefixes part here
                        pick = groups[i - 1][first]  # the group of layer i - 1 each one continues
                        x = x[pick]
                        img = img[pick] if img is not None else None
                    w_i = ws[first, i]
                else:
                    w_i = ws[:, i]
                if name == "torgb":
                    y = layer(x, w_i)
                    img = y if img is None else F.interpolate(img, scale_factor=2, mode="bilinear",
                                                              align_corners=False) + y
                else:
                    x = layer(x, w_i, noise_mode=noise_mode, generator=generator,
                              noise=None if noise is None else noise[j])
                    j += 1
                i += 1
        if share:
            img = img[groups[-1]]
        return img


def prefix_groups(ws: torch.Tensor) -> list[torch.Tensor]:
    """For ws (N, L, w_dim): per layer i a (N,) long tensor of group ids, equal for two images
    exactly when their ws agree on layers 0..i; ids are 0..G_i-1 in order of first appearance."""
    out, prev = [], torch.zeros(ws.shape[0], dtype=torch.long, device=ws.device)
    for i in range(ws.shape[1]):
        _, layer_id = torch.unique(ws[:, i], dim=0, return_inverse=True)
        key = prev * (ws.shape[0] + 1) + layer_id
        _, ids = torch.unique(key, return_inverse=True)
        # renumber by first appearance, so group k's first image comes before group k+1's
        order = _first_index(ids).argsort()
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=ws.device)
        prev = rank[ids]
        out.append(prev)
    return out


def _first_index(ids: torch.Tensor) -> torch.Tensor:
    """(G,) index of the first image of each group id 0..G-1."""
    n = int(ids.max()) + 1
    first = torch.full((n,), len(ids), dtype=torch.long, device=ids.device)
    return first.scatter_reduce(0, ids, torch.arange(len(ids), device=ids.device), reduce="amin")


class Generator(nn.Module):
    """z (N, z_dim) -> image (N, num_bands, R, R), unbounded (about [-1, 1] once trained)."""

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim, self.w_dim = cfg.z_dim, cfg.w_dim
        self.mapping = MappingNetwork(cfg)
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws

    def forward(self, z: torch.Tensor, *, z2: torch.Tensor | None = None, mix_cutoff: int | None = None,
                psi: float = 1.0, noise_mode: str = "random", generator: torch.Generator | None = None,
                update_w_avg: bool = False, return_ws: bool = False):
        """Images for z; with ``z2`` and ``mix_cutoff`` the layers from index ``mix_cutoff`` on
        take z2's style (style mixing). Returns the image, or ``(image, ws)`` with
        ``return_ws``: then, while gradients are recorded, the image is differentiable with
        respect to ``ws`` even when the mapping network takes none (frozen for fine-tuning),
        as the path-length penalty needs."""
        w = self.mapping(z, psi=psi, update_w_avg=update_w_avg)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)  # (N, num_ws, w_dim)
        if z2 is not None and mix_cutoff is not None and mix_cutoff < self.num_ws:
            w2 = self.mapping(z2, psi=psi)
            ws = torch.cat([ws[:, :mix_cutoff], w2.unsqueeze(1).expand(-1, self.num_ws - mix_cutoff, -1)], dim=1)
        if return_ws and torch.is_grad_enabled() and not ws.requires_grad:
            ws = ws.detach().requires_grad_(True)  # a leaf to differentiate with respect to
        img = self.synthesis(ws, noise_mode=noise_mode, generator=generator)
        return (img, ws) if return_ws else img


# ---------------------------------------------------------------------------------------------
# discriminator


class DiscriminatorBlock(nn.Module):
    """Residual block res -> res/2 (StyleGAN2 Fig. 7c)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv0 = EqConv2d(c_in, c_in, 3)
        self.conv1 = EqConv2d(c_in, c_out, 3, down=True)
        self.skip = EqConv2d(c_in, c_out, 1, bias=False, act=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append the mean standard deviation over groups of ``group`` samples as one channel
    (Karras et al. 2018, section 3): (N, C, H, W) -> (N, C + 1, H, W)."""
    n, c, h, w = x.shape
    g = min(group, n)
    if g < 1 or n % g:
        g = math.gcd(n, group) or 1
    y = x.reshape(g, -1, c, h, w).float()
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (N/g,)
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """image (N, num_bands, R, R) -> (N,) logits."""

    def __init__(self, cfg: StyleGANConfig):
        super().__init__()
        self.cfg = cfg
        res = cfg.block_resolutions[::-1]  # R, ..., 8, 4
        self.fromrgb = EqConv2d(cfg.num_bands, cfg.channels(cfg.resolution), 1)
        self.blocks = nn.ModuleDict({f"b{r}": DiscriminatorBlock(cfg.channels(r), cfg.channels(r // 2))
                                     for r in res[:-1]})
        c4 = cfg.channels(4)
        self.mbstd_group = cfg.mbstd_group
        self.conv = EqConv2d(c4 + (1 if cfg.mbstd_group else 0), c4, 3)
        self.fc = EqLinear(c4 * 16, c4, act=True)
        self.out = EqLinear(c4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fromrgb(x.contiguous(memory_format=MEMORY_FORMAT))  # see SynthesisNetwork.forward
        for block in self.blocks.values():
            x = block(x)
        if self.mbstd_group:
            x = minibatch_stddev(x, self.mbstd_group)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1))).flatten()


# ---------------------------------------------------------------------------------------------
# penalties (pure functions, tested against hand-computed values)


def r1_penalty(D: nn.Module, real: torch.Tensor, *, augment=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``|grad_x D(x)|^2`` on real images (Mescheder, Geiger & Nowozin 2018).

    Parameters
    ----------
    D : callable
        (N, C, H, W) -> (N,) logits.
    real : Tensor (N, C, H, W)
    augment : callable, optional
        Applied inside the gradient (the penalty is taken w.r.t. the un-augmented image).

    Returns
    -------
    penalty : Tensor (N,)
    logits : Tensor (N,)
    """
    x = real.detach().requires_grad_(True)
    logits = D(augment(x) if augment is not None else x)
    (grad,) = torch.autograd.grad(logits.float().sum(), x, create_graph=True)
    return grad.float().square().sum(dim=(1, 2, 3)), logits


def gradient_penalty(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor, *,
                     augment=None) -> torch.Tensor:
    """WGAN-GP term ``(|grad D(x_hat)| - 1)^2`` per sample, ``x_hat = eps real + (1 - eps) fake``
    (Gulrajani et al. 2017, Algorithm 1).

    Parameters
    ----------
    real, fake : Tensor (N, C, H, W)
    eps : Tensor (N,) in [0, 1]

    Returns
    -------
    Tensor (N,)
    """
    e = eps.to(real.device, real.dtype).view(-1, 1, 1, 1)
    x = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    logits = D(augment(x) if augment is not None else x)
    (grad,) = torch.autograd.grad(logits.float().sum(), x, create_graph=True)
    return (grad.float().flatten(1).norm(dim=1) - 1).square()


# ---------------------------------------------------------------------------------------------
# objective


class StyleGANObjective(Objective):
    """Phases ``D`` (+ ``D_reg`` every ``r1_every`` steps for logistic), ``G`` (+ ``G_reg``
    every ``pl_every`` steps when ``pl_weight`` > 0).

    The generator output of the D phase (with style mixing, random noise from the step's
    generator) is reused by the G phase. Statistics: ``loss_D``, ``loss_G``, ``D_real``,
    ``D_fake`` (mean logits), ``r1`` or ``gp``, ``pl_mean``, ``pl_penalty``.
    """

    def __init__(self, model_cfg, train_cfg, nets):
        super().__init__(model_cfg, train_cfg, nets)
        c = model_cfg
        phases = [Phase("D", optimizer="D")]
        if c.loss == "logistic" and c.r1_gamma > 0:
            phases.append(Phase("D_reg", optimizer="D", every=c.r1_every))
        phases.append(Phase("G", optimizer="G"))
        if c.pl_weight > 0:
            phases.append(Phase("G_reg", optimizer="G", every=c.pl_every))
        self.phases = tuple(phases)
        self.pl_mean = 0.0
        self.num_ws = num_ws(c)

    def begin_step(self, batch, ctx):
        n = ctx.batch_size
        ctx.stash["z"] = ctx.sample_latents(n)
        ctx.stash["z2"] = ctx.sample_latents(n)
        mix = float(torch.rand((), generator=ctx.generator)) < self.model_cfg.style_mixing_prob
        cut = int(torch.randint(1, self.num_ws, (), generator=ctx.generator)) if self.num_ws > 1 else self.num_ws
        ctx.stash["cutoff"] = cut if mix else self.num_ws

    def run(self, phase, batch, ctx):
        G, D, c = self.nets["G"], self.nets["D"], self.model_cfg
        if phase == "D":
            fake = G(ctx.stash["z"], z2=ctx.stash["z2"], mix_cutoff=ctx.stash["cutoff"], noise_mode="random",
                     generator=ctx.generator, update_w_avg=True)
            ctx.stash["fake"] = fake
            real_logits = D(ctx.augment(batch["image"])).float()
            fake_logits = D(ctx.augment(fake.detach())).float()
            ctx.observe_real_logits(real_logits)
            stats = {"D_real": real_logits.detach().mean(), "D_fake": fake_logits.detach().mean()}
            if c.loss == "logistic":
                loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
            else:
                eps = torch.rand(fake.shape[0], generator=ctx.generator)
                gp = gradient_penalty(D, batch["image"], fake, eps, augment=ctx.augment).mean()
                loss = (fake_logits.mean() - real_logits.mean() + c.gp_lambda * gp
                        + c.gp_drift * real_logits.square().mean())
                stats["gp"] = gp.detach()
            stats["loss_D"] = loss.detach()
            return loss, stats
        if phase == "D_reg":
            pen, logits = r1_penalty(D, batch["image"], augment=ctx.augment)
            loss = pen.mean() * (c.r1_gamma / 2) * c.r1_every + logits.float().mean() * 0
            return loss, {"r1": pen.detach().mean()}
        if phase == "G":
            # D's weights take no gradient here (the G optimiser steps only G): recording D's
            # forward without them skips the weight half of D's backward pass
            with _no_weight_grad(D):
                fake_logits = D(ctx.augment(ctx.stash["fake"])).float()
            loss = F.softplus(-fake_logits).mean() if c.loss == "logistic" else -fake_logits.mean()
            return loss, {"loss_G": loss.detach()}
        if phase == "G_reg":
            n = max(ctx.batch_size // c.pl_batch_shrink, 1)
            z = ctx.stash["z"][:n]
            img, ws = G(z, noise_mode="random", generator=ctx.generator, return_ws=True)
            noise = torch.randn(img.shape, generator=ctx.generator).to(img.device, img.dtype)
            noise = noise / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
            lengths = grad.float().square().sum(2).mean(1).sqrt()  # (n,)
            self.pl_mean = float(self.pl_mean + c.pl_decay * (float(lengths.detach().mean()) - self.pl_mean))
            pen = (lengths - self.pl_mean).square().mean()
            loss = pen * c.pl_weight * c.pl_every + img[:, 0, 0, 0].mean() * 0
            return loss, {"pl_penalty": pen.detach(), "pl_mean": torch.tensor(self.pl_mean, device=pen.device)}
        raise ValueError(f"unknown phase {phase!r}")

    def state_dict(self) -> dict:
        return {"pl_mean": self.pl_mean}

    def load_state_dict(self, state) -> None:
        self.pl_mean = float(state.get("pl_mean", self.pl_mean))


class _no_weight_grad:
    """Within the block, the module's parameters do not require gradients (restored after)."""

    def __init__(self, net: nn.Module):
        # not under DistributedDataParallel, whose reducer expects every parameter's gradient
        ddp = isinstance(net, nn.parallel.DistributedDataParallel)
        self.params = [] if ddp else [p for p in net.parameters() if p.requires_grad]

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p in self.params:
            p.requires_grad_(True)
        return False


# ---------------------------------------------------------------------------------------------
# family


def num_ws(cfg: StyleGANConfig) -> int:
    """Number of styled layers: 2 at 4x4 (conv + toRGB), 3 per further block."""
    return len(layer_table(cfg))


def layer_table(cfg: StyleGANConfig) -> list[tuple[str, int, str]]:
    """``(layer name in the synthesis network, resolution in px, "conv" | "rgb")`` per w index."""
    out = []
    for r in cfg.block_resolutions:
        names = (["conv0"] if r > 4 else []) + ["conv1", "torgb"]
        out += [(f"blocks.b{r}.{n}", r, "rgb" if n == "torgb" else "conv") for n in names]
    return out


def _lazy_ratio(every: int, on: bool) -> float:
    """StyleGAN2 appendix B: a lazily regularised optimiser uses lr * c and betas ** c with
    c = every / (every + 1), so its per-step behaviour matches regularising every step."""
    return every / (every + 1) if on else 1.0


class StyleGANFamily(Family):
    name = "stylegan"
    config_cls = StyleGANConfig
    objective_cls = StyleGANObjective
    description = "StyleGAN2-like: mapping z->w, modulated convs, noise, skip toRGB; residual D (Karras et al. 2019, 2020)"

    def build(self, cfg: StyleGANConfig) -> dict[str, nn.Module]:
        return {"G": Generator(cfg), "D": Discriminator(cfg)}

    def build_G(self, cfg):
        return Generator(cfg)

    def build_D(self, cfg):
        return Discriminator(cfg)

    def _ratio(self, name: str, cfg: StyleGANConfig) -> float:
        if name.startswith("D"):
            return _lazy_ratio(cfg.r1_every, cfg.loss == "logistic" and cfg.r1_gamma > 0)
        return _lazy_ratio(cfg.pl_every, cfg.pl_weight > 0)

    def optimizers(self, cfg, train_cfg, params):
        """Adam per network with betas ``beta ** c`` and every group's ``lr_mult`` times ``c``
        for lazy regularisation (``c = every / (every + 1)``); the mapping network's
        parameters form a group with ``lr_mult = mapping_lr_mult * c``."""
        t, out = train_cfg, {}
        for name, ps in params.items():
            c = self._ratio(name, cfg)
            lr = self.base_lr(name, t)
            groups: dict[float, list] = {}
            for p in ps:
                groups.setdefault(float(getattr(p, "lr_mult", 1.0)) * c, []).append(p)
            out[name] = torch.optim.Adam([{"params": v, "lr": lr * m, "lr_mult": m} for m, v in groups.items()],
                                         lr=lr, betas=(t.beta1**c, t.beta2**c))
        return out

    def latent_spaces(self, cfg):
        return {"z": int(cfg.z_dim), "w": int(cfg.w_dim)}

    def generate(self, nets, latents, *, labels=None, psi=1.0, noise_mode="const", refs=None):
        """z (n, z_dim) -> images (n, num_bands, R, R) clamped to [-1, 1]."""
        return nets["G"](latents, psi=psi, noise_mode=noise_mode).clamp(-1, 1)

    def freeze_units(self, net_name, net, unit):
        """G from the 4x4 end: the mapping network is the first unit; then with ``layer`` each
        styled layer (the 4x4 constant goes with the first convolution), with ``block`` each
        resolution block. D (always by block) from the image end: fromRGB with the first
        block, each further block, then the 4x4 epilogue."""
        if unit not in ("layer", "block"):
            raise ValueError(f"train.freeze_unit must be 'layer' or 'block', got {unit!r}")
        sd = list(net.state_dict())

        def under(prefix: str) -> list[str]:
            return [k for k in sd if k.startswith(prefix + ".")]

        if net_name == "G":
            units = [under("mapping")]
            for r in net.cfg.block_resolutions:
                b = f"synthesis.blocks.b{r}"
                if unit == "block":
                    units.append((["synthesis.const"] if r == 4 else []) + under(b))
                else:
                    names = (["conv0"] if r > 4 else []) + ["conv1", "torgb"]
                    for i, n in enumerate(names):
                        units.append((["synthesis.const"] if r == 4 and i == 0 else []) + under(f"{b}.{n}"))
            return units
        if net_name == "D":
            keys = list(net.blocks.keys())
            units = [under("fromrgb") + under(f"blocks.{keys[0]}")] if keys else [under("fromrgb")]
            units += [under(f"blocks.{k}") for k in keys[1:]]
            units.append(under("conv") + under("fc") + under("out"))
            return units
        return super().freeze_units(net_name, net, unit)
