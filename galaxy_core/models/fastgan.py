"""FastGAN / Lightweight GAN (Liu et al. 2021) for small galaxy datasets.

Reference: B. Liu, Y. Zhu, K. Song & A. Elgammal (2021), "Towards Faster and Stabilized GAN
Training for High-fidelity Few-shot Image Synthesis", ICLR.

Generator: z (N, z_dim) -> 4x4 by a transposed convolution, then one up-block per doubling
(nearest-neighbour x2, 3x3 convolution, batch norm, GLU). Skip-layer excitation (SLE) lets a
low-resolution map gate the channels of a high-resolution one: the 8x8 map gates the 64x64 map,
16x16 gates 128x128 and 32x32 gates 256x256, for the outputs that have them. A 32 px generator
(small stamps, e.g. the sky composer's galaxies) has none of those maps, so its 32x32 map is
gated by the 4x4 map instead (the same side ratio of 8).

Discriminator: strided down-blocks with an average-pool shortcut to 16x16 and 8x8 feature maps,
then a 4x4 convolution to a 5x5 map of logits (hinge loss on each); every convolution of this
adversarial path is spectrally normalised (Miyato et al. 2018, as in the paper's code;
``d_spectral_norm``) and ``d_width`` may make D wider than G. It is also trained as an
auto-encoder on real images (self-supervision): one small decoder rebuilds the whole real image
(downscaled to ``rec_resolution``) from the 8x8 features, another rebuilds a random quarter of
it from the matching quarter of the 16x16 features. The paper uses a perceptual (LPIPS) distance;
no pretrained VGG can be downloaded here, so the reconstruction loss is a pixel L1 (default) or
MSE, chosen by ``rec_loss``.

Output bias: the output convolutions of G and of the decoders follow zero-mean features (batch
norm, GLU), so their bias starts at the data's sky level (``out_bias``, :func:`data_out_bias`)
instead of 0, which Adam would take thousands of steps to leave.

Batch-norm statistics for sampling: the engine's EMA generator averages the weights but copies
the batch-norm running statistics of the live generator, which belong to other weights; in eval
mode that mismatch costs quality (the step-300 EMA weights of the hdf preset: live
fid_galaxy_256 539 with the copied statistics, 388 with re-estimated ones) and grows as the live
weights move. :meth:`FastGANFamily.generate` therefore re-estimates the statistics for the
weights it is given whenever they changed since the last estimate
(:mod:`galaxy_core.models.bnstats`, on :func:`calibration_latents`, as Izmailov et al. 2018 do
for averaged weights); this is deterministic and independent of the batch being sampled.

Differentiable augmentation (``[augment] diff``, translation/cutout/colour on RGB data) is applied
by the engine to real and generated images alike before D; the decoders rebuild the augmented
real image D was shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from galaxy_core.models.bnstats import ensure_calibrated
from galaxy_core.models.dcgan import init_weights  # N(0, 0.02) convolutions, as in the paper's code
from galaxy_core.models.family import Family, Objective, Phase
from galaxy_core.models.losses import d_loss, g_loss

RECAL_SAMPLES = 256   # latents used to re-estimate batch-norm statistics of a sampling generator
RECAL_BATCH = 64
RECAL_SEED = 8191

OUT_BIAS_SAMPLE = 2048  # training images whose median pixel sets the output bias
OUT_BIAS_CLIP = 0.95     # the median is clipped to +-0.95 before atanh
OUT_BIAS_MAX = math.atanh(OUT_BIAS_CLIP)


def data_out_bias(images: np.ndarray) -> float:
    """Initial pre-tanh bias of an output layer for training images ``images`` (N, C, H, W) in the
    model range [-1, 1]: ``atanh(clip(median pixel, -0.95, 0.95))``.

    A galaxy stamp is mostly sky, so the median is the sky level. The output layers follow
    zero-mean features (batch norm, GLU), so only their bias can shift every pixel at once, and
    Adam moves a bias by about the learning rate per step: from 0 to the sky level of asinh-
    stretched data (about -1.5 before tanh) takes thousands of steps, during which every sample
    has a grey sky. Starting the bias at the sky level removes that phase (the usual
    initialisation of an output layer at the data's typical value).
    """
    if images.size == 0:
        raise ValueError("data_out_bias: no images")
    med = float(np.median(np.asarray(images, np.float32)))
    return float(np.arctanh(np.clip(med, -OUT_BIAS_CLIP, OUT_BIAS_CLIP)))


# Which low-resolution map gates which high-resolution map. Liu et al. 2021 (Fig. 3 and their
# code) pair maps 16 times apart in side (4 -> 64, 8 -> 128, 16 -> 256 px); this project pairs
# them 8 times apart, so that a 32 px generator has a pair too (docs/families/fastgan.md).
SLE_PAIRS = ((8, 64), (16, 128), (32, 256))


def sle_pairs(resolution: int) -> tuple[tuple[int, int], ...]:
    """(low side, high side) of every SLE of a generator with output side ``resolution``: the
    pairs of :data:`SLE_PAIRS` it has, or, for an output below 64 px that has none, its output
    map gated by the map of 1/8 its side (the same ratio; 4 -> 32 px)."""
    return tuple(p for p in SLE_PAIRS if p[1] <= resolution) or ((resolution // 8, resolution),)


@dataclass
class FastGANConfig:
    resolution: int = field(default=64, metadata={"doc": "output side in pixels: 32, 64, 128 or 256 (from the data)"})
    num_bands: int = field(default=3, metadata={"doc": "output channels (from the data)"})
    z_dim: int = field(default=256, metadata={"doc": "latent size; z ~ N(0, I) (the paper uses 256)"})
    width: int = field(default=32, metadata={"doc": "channels at 64x64; doubled per halving of the side up to 8 x width"})
    d_width: int = field(default=0, metadata={"doc": "the same for D and its decoders (0 = width)"})
    rec_resolution: int = field(default=0, metadata={"doc": "side of the decoders' reconstructions, pixels (0 = resolution / 2, at most 128)"})
    rec_loss: str = field(default="l1", metadata={"doc": "reconstruction distance on real images: 'l1' or 'mse' (the paper's LPIPS needs VGG weights)"})
    rec_weight: float = field(default=1.0, metadata={"doc": "weight of the reconstruction loss in D's objective (0 = no self-supervision; the decoders are then not run)"})
    out_bias: float = field(default=0.0, metadata={"doc": "pre-tanh bias of the output layers of G and of D's decoders at initialisation (from the data: atanh of the median training pixel, see data_out_bias)"})
    d_spectral_norm: bool = field(default=True, metadata={"doc": "spectral normalisation of every convolution of D's adversarial path (Miyato et al. 2018), as the paper's code does"})

    def __post_init__(self):
        if self.resolution not in (32, 64, 128, 256):
            raise ValueError(f"model.resolution must be 32, 64, 128 or 256 for fastgan, got {self.resolution}")
        if self.width < 1 or self.z_dim < 1 or self.num_bands < 1 or self.d_width < 0:
            raise ValueError("model.width, model.z_dim and model.num_bands must be positive, model.d_width >= 0")
        if self.rec_loss not in ("l1", "mse"):
            raise ValueError(f"model.rec_loss must be 'l1' or 'mse', got {self.rec_loss!r}")
        if self.rec_resolution and self.rec_resolution not in (16, 32, 64, 128):
            raise ValueError(f"model.rec_resolution must be 0, 16, 32, 64 or 128, got {self.rec_resolution}")
        if not math.isfinite(self.out_bias) or abs(self.out_bias) > OUT_BIAS_MAX + 1e-6:
            raise ValueError(f"model.out_bias must be finite and within +-{OUT_BIAS_MAX:.2f}, got {self.out_bias}")
        if self.rec_weight < 0:
            raise ValueError(f"model.rec_weight must be >= 0, got {self.rec_weight}")

    @property
    def rec_side(self) -> int:
        """Side of the reconstructions (``rec_resolution`` or its default)."""
        return self.rec_resolution or min(128, self.resolution // 2)

    def channels(self, side: int, width: int | None = None) -> int:
        """Feature channels of G (or, with ``width``, of another network) at a side of ``side``
        pixels (at least 8)."""
        w = self.width if width is None else width
        return max(8, min(8 * w, w * 64 // side))

    def d_channels(self, side: int) -> int:
        """Feature channels of D at a side of ``side`` pixels."""
        return self.channels(side, self.d_width or self.width)


# blocks --------------------------------------------------------------------------------------
class UpBlock(nn.Module):
    """Nearest x2, 3x3 convolution to 2 * c_out, batch norm, GLU: (N, c_in, s, s) -> (N, c_out, 2s, 2s)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, 2 * c_out, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(self.bn(self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))), dim=1)


class SLE(nn.Module):
    """Skip-layer excitation: channel gates for a high-resolution map from a low-resolution one.

    ``low`` (N, c_low, s, s) -> adaptive average pool to 4x4 -> 4x4 convolution (no padding) to
    (N, c_high, 1, 1) -> LeakyReLU(0.1) -> 1x1 convolution -> sigmoid, a gate in (0, 1) per
    channel that multiplies ``high`` (N, c_high, S, S). Liu et al. (2021), Sec. 3.1, Eq. 1.
    """

    def __init__(self, c_low: int, c_high: int):
        super().__init__()
        self.squeeze = nn.Conv2d(c_low, c_high, 4, 1, 0, bias=False)
        self.excite = nn.Conv2d(c_high, c_high, 1, 1, 0, bias=False)

    def gate(self, low: torch.Tensor) -> torch.Tensor:
        """(N, c_high, 1, 1) gates in (0, 1)."""
        h = F.leaky_relu(self.squeeze(F.adaptive_avg_pool2d(low, 4)), 0.1)
        return torch.sigmoid(self.excite(h))

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return high * self.gate(low)


class DownBlock(nn.Module):
    """(N, c_in, s, s) -> (N, c_out, s/2, s/2): the mean of a strided 4x4 + 3x3 convolution path
    and an average-pool + 1x1 convolution shortcut (the paper's DownBlockComp), each with batch
    norm and LeakyReLU(0.2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2),
        )
        self.skip = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False),
                                  nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.skip(x)) / 2


class Decoder(nn.Module):
    """8x8 features (N, c_in, 8, 8) -> image (N, num_bands, side, side) in [-1, 1] by up-blocks."""

    def __init__(self, c_in: int, num_bands: int, side: int, width: int):
        super().__init__()
        n_up = int(math.log2(side // 8))
        chans = [c_in] + [max(8, width * 2 ** (n_up - 1 - i)) for i in range(n_up)]
        self.ups = nn.Sequential(*[UpBlock(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.to_img = nn.Conv2d(chans[-1], num_bands, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.to_img(self.ups(x)))


# networks ------------------------------------------------------------------------------------
class Generator(nn.Module):
    def __init__(self, cfg: FastGANConfig):
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        c4 = cfg.channels(4)
        self.init = nn.Sequential(nn.ConvTranspose2d(cfg.z_dim, 2 * c4, 4, 1, 0, bias=False), nn.BatchNorm2d(2 * c4))
        sides = [2**k for k in range(3, int(math.log2(cfg.resolution)) + 1)]  # 8, 16, ..., R
        self.ups = nn.ModuleDict({str(s): UpBlock(cfg.channels(s // 2), cfg.channels(s)) for s in sides})
        self.sle_low = {hi: lo for lo, hi in sle_pairs(cfg.resolution)}
        self.sle = nn.ModuleDict({str(hi): SLE(cfg.channels(lo), cfg.channels(hi)) for hi, lo in self.sle_low.items()})
        self.to_img = nn.Conv2d(cfg.channels(cfg.resolution), cfg.num_bands, 3, 1, 1)
        self.apply(init_weights)
        nn.init.constant_(self.to_img.bias, cfg.out_bias)

    def features(self, z: torch.Tensor) -> dict[int, torch.Tensor]:
        """Feature maps by side, after gating: ``{4: (N, c4, 4, 4), 8: ..., R: (N, cR, R, R)}``."""
        x = F.glu(self.init(z.view(z.shape[0], self.z_dim, 1, 1)), dim=1)  # (N, c4, 4, 4)
        feats = {4: x}
        for key, up in self.ups.items():
            side = int(key)
            x = up(x)
            if key in self.sle:
                x = self.sle[key](x, feats[self.sle_low[side]])
            feats[side] = x
        return feats

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: (N, z_dim) -> (N, num_bands, R, R) in [-1, 1]
        return torch.tanh(self.to_img(self.features(z)[self.cfg.resolution]))


class Discriminator(nn.Module):
    """Image (N, C, R, R) -> logits (N * 25,) (5x5 patches per image), optionally with
    reconstructions: the whole image from the 8x8 features and quarter ``part`` (0..3: top-left,
    top-right, bottom-left, bottom-right) from the 16x16 features, both (N, C, r, r), r =
    ``rec_side``."""

    def __init__(self, cfg: FastGANConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(nn.Conv2d(cfg.num_bands, cfg.d_channels(cfg.resolution), 3, 1, 1, bias=False),
                                  nn.LeakyReLU(0.2))
        sides = [2**k for k in range(int(math.log2(cfg.resolution)), 3, -1)]  # R, R/2, ..., 16
        self.downs = nn.ModuleDict({str(s // 2): DownBlock(cfg.d_channels(s), cfg.d_channels(s // 2)) for s in sides})
        c8 = cfg.d_channels(8)
        self.head = nn.Sequential(nn.Conv2d(c8, c8, 1, 1, 0, bias=False), nn.BatchNorm2d(c8), nn.LeakyReLU(0.2),
                                  nn.Conv2d(c8, 1, 4, 1, 0))  # (N, 1, 5, 5)
        self.dec_full = Decoder(c8, cfg.num_bands, cfg.rec_side, cfg.d_width or cfg.width)
        self.dec_part = Decoder(cfg.d_channels(16), cfg.num_bands, cfg.rec_side, cfg.d_width or cfg.width)
        self.apply(init_weights)
        for dec in (self.dec_full, self.dec_part):
            nn.init.constant_(dec.to_img.bias, cfg.out_bias)
        if cfg.d_spectral_norm:
            for part in (self.stem, self.downs, self.head):
                for m in part.modules():
                    if isinstance(m, nn.Conv2d):
                        spectral_norm(m)

    def forward(self, x: torch.Tensor, part: int | None = None):
        h = self.stem(x)
        feats = {}
        for key, down in self.downs.items():
            h = down(h)
            feats[int(key)] = h
        logits = self.head(feats[8]).flatten()
        if part is None:
            return logits
        f16 = feats[16]  # (N, c16, 16, 16)
        r, c = divmod(int(part), 2)
        quarter = f16[:, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8]  # (N, c16, 8, 8)
        return logits, self.dec_full(feats[8]), self.dec_part(quarter)


# objective -----------------------------------------------------------------------------------
def quarter(x: torch.Tensor, part: int) -> torch.Tensor:
    """Quarter ``part`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of (N, C, H, W)."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    r, c = divmod(int(part), 2)
    return x[..., r * h : (r + 1) * h, c * w : (c + 1) * w]


def reconstruction_targets(real: torch.Tensor, part: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole image and quarter ``part`` of ``real`` (N, C, R, R), each area-averaged to
    (N, C, side, side)."""
    full = F.adaptive_avg_pool2d(real, side)
    return full, F.adaptive_avg_pool2d(quarter(real, part), side)


def reconstruction_loss(kind: str, rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``mse``) difference, a scalar."""
    return (rec - target).abs().mean() if kind == "l1" else ((rec - target) ** 2).mean()


class FastGANObjective(Objective):
    """Hinge loss (``train.loss``, hinge in the paper) on 5x5 patch logits; D also minimises
    ``rec_weight`` times the reconstruction loss of the two decoders on real images only.

    Phases ``D`` then ``G``; the generated batch is made once in ``D`` and reused in ``G``. The
    quarter the part-decoder rebuilds is drawn per step from the step's generator. Statistics:
    ``loss_D`` (adversarial + reconstruction), ``loss_D_adv``, ``loss_rec`` (the two
    reconstruction losses summed), ``loss_G``, ``D_real`` and ``D_fake`` (mean logits).
    """

    phases = (Phase("D", optimizer="D"), Phase("G", optimizer="G"))

    def begin_step(self, batch, ctx):
        ctx.stash["z"] = ctx.sample_latents(ctx.batch_size)
        ctx.stash["part"] = int(torch.randint(4, (1,), generator=ctx.generator))

    def run(self, phase, batch, ctx):
        G, D, t, cfg = self.nets["G"], self.nets["D"], self.train_cfg, self.model_cfg
        if phase == "D":
            fake = G(ctx.stash["z"])  # (N, C, R, R) in [-1, 1]
            ctx.stash["fake"] = fake
            part = ctx.stash["part"]
            real = ctx.augment(batch["image"])
            if cfg.rec_weight > 0:
                real_logits, rec_full, rec_part = D(real, part)
                full_t, part_t = reconstruction_targets(real.detach(), part, cfg.rec_side)
                rec = (reconstruction_loss(cfg.rec_loss, rec_full.float(), full_t.float())
                       + reconstruction_loss(cfg.rec_loss, rec_part.float(), part_t.float()))
            else:  # no self-supervision: the decoders are not run
                real_logits = D(real)
                rec = torch.zeros((), device=real.device)
            fake_logits = D(ctx.augment(fake.detach()))
            ctx.observe_real_logits(real_logits)
            adv = d_loss(t.loss, real_logits.float(), fake_logits.float(), label_smoothing=t.label_smoothing)
            loss = adv + cfg.rec_weight * rec
            return loss, {"loss_D": loss.detach(), "loss_D_adv": adv.detach(), "loss_rec": rec.detach(),
                          "D_real": real_logits.detach().float().mean(), "D_fake": fake_logits.detach().float().mean()}
        loss = g_loss(t.loss, D(ctx.augment(ctx.stash["fake"])).float())
        return loss, {"loss_G": loss.detach()}


def calibration_latents(z_dim: int, *, n: int = RECAL_SAMPLES, batch: int = RECAL_BATCH,
                        seed: int = RECAL_SEED) -> list[torch.Tensor]:
    """Fixed latents, in batches, on which a sampling generator's batch-norm statistics are
    re-estimated: ``n`` draws of N(0, I) from a ``torch.Generator`` seeded with ``seed``."""
    z = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))
    return list(z.split(batch))


class FastGANFamily(Family):
    name = "fastgan"
    config_cls = FastGANConfig
    objective_cls = FastGANObjective
    description = "FastGAN / Lightweight GAN: skip-layer excitation, self-supervised D (Liu et al. 2021)"

    data_fields = ("resolution", "num_bands", "out_bias")

    def resolve_config(self, values: dict, data) -> dict:
        """Resolution and bands from the data, and ``out_bias`` from up to 2,048 evenly spaced
        training images (:func:`data_out_bias`)."""
        values = super().resolve_config(values, data)
        n = len(data)
        idx = np.unique(np.linspace(0, n - 1, min(n, OUT_BIAS_SAMPLE)).astype(int))
        values["out_bias"] = round(data_out_bias(data.to_model_range(idx)), 6)
        return values

    def build(self, cfg: FastGANConfig) -> dict[str, nn.Module]:
        return {"G": Generator(cfg), "D": Discriminator(cfg)}

    def build_G(self, cfg: FastGANConfig) -> nn.Module:
        return Generator(cfg)

    def generate(self, nets, latents, *, labels=None, psi=1.0, noise_mode="const", refs=None):
        """``G(latents)``; a generator in eval mode first gets batch-norm statistics of its own
        weights (:func:`~galaxy_core.models.bnstats.ensure_calibrated` on
        :func:`calibration_latents`) if its weights or buffers changed since the last time."""
        G = nets["G"]
        device = next(G.parameters()).device
        ensure_calibrated(G, lambda: [z.to(device) for z in calibration_latents(G.z_dim)])
        return G(latents)

    def build_D(self, cfg: FastGANConfig) -> nn.Module:
        return Discriminator(cfg)
