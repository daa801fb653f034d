"""StackGAN stage II: a 2x super-resolution GAN chained after a DCGAN stage I.

Reference: L. Fussell & B. Moews (2019), "Forging new worlds: high-resolution
synthetic galaxies with chained generative adversarial networks", MNRAS 485, 3203 (stage II
after Zhang et al. 2017, "StackGAN").

Stage-II generator (for a 64 px input and 128 px output; other sides scale alike), 16
convolutions, batch norm and ReLU after each but the last::

    layer 1       4x4 stride-2 convolution, C -> width         64 -> 32 px  (information bottleneck)
    layers 2-13   six residual blocks of two 3x3 convolutions  32 px        (x + conv(conv(x)))
    layer 14      3x3 convolution, width -> width              32 px
                  + output of layer 1 (long residual)
                  nearest-neighbour x2                          32 -> 64 px
    layer 15      3x3 convolution, width -> final_width (512)  64 px
                  nearest-neighbour x2                          64 -> 128 px
    layer 16      3x3 convolution, final_width -> C, tanh       128 px

Option ``input_skip`` (not in the paper): the output is ``tanh(atanh(up(low)) + layer 16)`` with
``up`` the bilinear x2 of the input (clamped to +-0.999) and layer 16 initialised to zero, so an
untrained stage II is exactly bilinear upsampling and training learns only the correction (a
residual to the input, as super-resolution networks after Kim et al. 2016, VDSR, use).

The paper upsamples once before its last two layers; because the bottleneck halves 64 to 32, an
output of 128 needs two doublings here, one before each of the last two layers.

Objective (paper, Sec. 2.3): ``lambda_adv * adversarial + lambda_pix * pixel`` for G with
lambda_adv = 0.001 and lambda_pix = 1, where ``pixel`` is the mean squared difference of the
per-pixel sums over bands of the generated and real 128 px images (``pixel_loss = "band_sum"``;
``"per_band"`` compares each band). The discriminator is the DCGAN discriminator at the output
side (one more stride-2 layer at 128 px). The paper halves the learning rate every 80 epochs
(``train.lr_step_every = 80``, ``lr_step_unit = "epoch"``, ``lr_gamma = 0.5``).

Input scaling: the paper feeds [0, 1] images; here inputs and outputs are the engine's model
range [-1, 1] (the data's invertible asinh stretch for survey data). Training uses real pairs
(the ``pair`` data kind: the low image is the 2x2 mean of the high one, in stage II's stretch);
stage I only runs for sample grids and chained generation. Stage I's images are in the stretch
of *its* data, fitted at its own pixel size (for ``sim``: softening 0.062 nanomaggy in g at
64 px against 0.0106 at 128 px), so with ``stage1_input = "restretch"`` (new runs) the chain
turns them into flux with stage I's stretch, spreads each pixel's flux over the finer pixels
(total flux kept: times the ratio of pixel areas, 1/4) and applies stage II's stretch
(:func:`~galaxy_core.io.stretch.restretch`). ``"as_is"`` hands stage I's values over unchanged,
as every chain did before the option existed (cards without the field load so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from galaxy_core.errors import ConfigError
from galaxy_core.models.bnstats import ensure_calibrated
from galaxy_core.models.dcgan import DCGANConfig
from galaxy_core.models.dcgan import Discriminator as DCGANDiscriminator
from galaxy_core.models.dcgan import init_weights
from galaxy_core.models.family import Family, Objective, Phase
from galaxy_core.models.losses import d_loss, g_loss

CALIBRATION_SAMPLES = 256  # stage-I images on which a sampling stage II re-estimates batch-norm statistics
CALIBRATION_BATCH = 64
CALIBRATION_SEED = 8191
SKIP_CLAMP = 0.999  # |bilinear input| is clamped below 1 before atanh (input_skip), atanh(0.999) = 3.8
STAGE1_INPUTS = ("restretch", "as_is")


@dataclass
class StackGANConfig:
    resolution: int = field(default=128, metadata={"doc": "output side in pixels: 64, 128 or 256 (from the data); the input is half of it"})
    num_bands: int = field(default=3, metadata={"doc": "channels of input and output (from the data)"})
    stage1: str = field(default="checkpoints/dcgan_sim64.json", metadata={"doc": "stage-I checkpoint (JSON path; relative to the working folder, else to the project folder) whose images stage II refines"})
    z_dim: int = field(default=100, metadata={"doc": "latent size of the chain (from the stage-I checkpoint)"})
    width: int = field(default=128, metadata={"doc": "channels of layers 1-14 (the paper uses 128)"})
    final_width: int = field(default=512, metadata={"doc": "channels of layer 15, before the final tanh layer (the paper uses 512)"})
    res_blocks: int = field(default=6, metadata={"doc": "residual blocks of two 3x3 convolutions (6 gives the paper's 16 layers)"})
    d_width: int = field(default=64, metadata={"doc": "channels at the image end of the DCGAN discriminator"})
    lambda_adv: float = field(default=0.001, metadata={"doc": "weight of the adversarial loss in G's objective (paper: 0.001)"})
    lambda_pix: float = field(default=1.0, metadata={"doc": "weight of the pixel loss in G's objective (paper: 1)"})
    pixel_loss: str = field(default="band_sum", metadata={"doc": "'band_sum': MSE of per-pixel sums over bands (paper); 'per_band': MSE of every band"})
    input_skip: bool = field(default=False, metadata={"doc": "output tanh(atanh(bilinear x2 of the input) + layer 16) with layer 16 zero at start, so stage II starts as bilinear upsampling and learns a correction (not in the paper)"})
    stage1_input: str = field(default="restretch", metadata={"doc": "how stage-I images enter stage II: 'restretch' re-encodes flux data from stage I's stretch into stage II's (through flux, total flux kept), the encoding stage II is trained on; 'as_is' hands the values over unchanged (right only when both stages share one stretch; cards written before this field were sampled so)"})

    def __post_init__(self):
        if self.resolution not in (64, 128, 256):
            raise ValueError(f"model.resolution must be 64, 128 or 256 for stackgan, got {self.resolution}")
        if min(self.width, self.final_width, self.d_width, self.z_dim, self.num_bands) < 1 or self.res_blocks < 0:
            raise ValueError("model.width, final_width, d_width, z_dim and num_bands must be positive, res_blocks >= 0")
        if self.pixel_loss not in ("band_sum", "per_band"):
            raise ValueError(f"model.pixel_loss must be 'band_sum' or 'per_band', got {self.pixel_loss!r}")
        if self.lambda_adv < 0 or self.lambda_pix < 0:
            raise ValueError("model.lambda_adv and model.lambda_pix must be >= 0")
        if self.stage1_input not in STAGE1_INPUTS:
            raise ValueError(f"model.stage1_input must be one of {', '.join(STAGE1_INPUTS)}, got {self.stage1_input!r}")

    @property
    def input_resolution(self) -> int:
        return self.resolution // 2


def stage1_path(path: str) -> Path:
    """The stage-I checkpoint JSON: ``path`` as given if it exists (absolute or relative to the
    working folder), else relative to the project folder (where ``checkpoints/`` is shipped).

    Raises
    ------
    ConfigError
        Empty path, or no checkpoint at either place.
    """
    if not path:
        raise ConfigError("model.stage1: stackgan needs a stage-I checkpoint (e.g. \"checkpoints/dcgan_sim64.json\")")
    from galaxy_core.paths import with_suffix_of

    p = with_suffix_of(path, ".json", (".json", ".safetensors"))
    if p.exists() or p.is_absolute():
        if not p.exists():
            raise ConfigError(f"model.stage1: no checkpoint at {p}; train a stage-I DCGAN or point to one")
        return p
    project = Path(__file__).resolve().parents[2] / p
    if project.exists():
        return project
    raise ConfigError(f"model.stage1: no checkpoint at {p} (nor at {project}); train a stage-I DCGAN or point to one")


# generator -----------------------------------------------------------------------------------
def conv_bn_relu(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2 if stride == 1 else 1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(True))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; ``relu(x + bn(conv(relu(bn(conv(x))))))``."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = conv_bn_relu(c, c)
        self.conv2 = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class Generator(nn.Module):
    """Stage II: (N, C, R/2, R/2) in [-1, 1] -> (N, C, R, R) in [-1, 1] (see module docstring)."""

    def __init__(self, cfg: StackGANConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.bottleneck = conv_bn_relu(cfg.num_bands, w, k=4, stride=2)  # layer 1: R/2 -> R/4
        self.blocks = nn.Sequential(*[ResBlock(w) for _ in range(cfg.res_blocks)])  # layers 2-13
        self.mid = conv_bn_relu(w, w)  # layer 14
        self.up1 = conv_bn_relu(w, cfg.final_width)  # layer 15, after the first doubling
        self.to_img = nn.Conv2d(cfg.final_width, cfg.num_bands, 3, 1, 1)  # layer 16, after the second
        self.apply(init_weights)
        if cfg.input_skip:  # start as exactly the bilinear upsampling of the input
            nn.init.zeros_(self.to_img.weight)
            nn.init.zeros_(self.to_img.bias)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        h0 = self.bottleneck(low)  # (N, w, R/4, R/4)
        h = self.mid(self.blocks(h0)) + h0  # long residual from layer 1
        h = self.up1(F.interpolate(h, scale_factor=2, mode="nearest"))  # (N, final_width, R/2, R/2)
        out = self.to_img(F.interpolate(h, scale_factor=2, mode="nearest"))  # (N, C, R, R), pre-tanh
        if self.cfg.input_skip:
            base = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + torch.atanh(base.clamp(-SKIP_CLAMP, SKIP_CLAMP))
        return torch.tanh(out)


def build_discriminator(cfg: StackGANConfig) -> nn.Module:
    """The DCGAN discriminator at the output side (32 -> 4 halvings, one more at 128 px)."""
    return DCGANDiscriminator(DCGANConfig(resolution=cfg.resolution, num_bands=cfg.num_bands, width=cfg.d_width))


# objective -----------------------------------------------------------------------------------
def pixel_loss(kind: str, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Fussell & Moews (2019) pixel loss between (N, C, H, W) images, a scalar.

    ``band_sum``: ``mean_{n,y,x} (sum_c fake - sum_c real)^2``; ``per_band``:
    ``mean_{n,c,y,x} (fake - real)^2``.
    """
    if kind == "band_sum":
        return ((fake.sum(1) - real.sum(1)) ** 2).mean()
    return ((fake - real) ** 2).mean()


class StackGANObjective(Objective):
    """Phase ``D``: the DCGAN discriminator loss (``train.loss``) on real high-resolution images
    and stage-II outputs from their low-resolution pairs. Phase ``G``:
    ``lambda_adv * adversarial + lambda_pix * pixel``. Statistics: ``loss_D``, ``loss_G`` (the
    weighted total), ``loss_adv``, ``loss_pix``, ``D_x``, ``D_G_z``.
    """

    phases = (Phase("D", optimizer="D"), Phase("G", optimizer="G"))

    def run(self, phase, batch, ctx):
        G, D, t, cfg = self.nets["G"], self.nets["D"], self.train_cfg, self.model_cfg
        if phase == "D":
            fake = G(batch["low"])  # (N, C, R, R) in [-1, 1]
            ctx.stash["fake"] = fake
            real_logits = D(ctx.augment(batch["image"]))
            fake_logits = D(ctx.augment(fake.detach()))
            ctx.observe_real_logits(real_logits)
            loss = d_loss(t.loss, real_logits.float(), fake_logits.float(), label_smoothing=t.label_smoothing)
            return loss, {"loss_D": loss.detach(), "D_x": torch.sigmoid(real_logits.detach().float()).mean(),
                          "D_G_z": torch.sigmoid(fake_logits.detach().float()).mean()}
        fake = ctx.stash["fake"]
        adv = g_loss(t.loss, D(ctx.augment(fake)).float())
        pix = pixel_loss(cfg.pixel_loss, fake.float(), batch["image"].float())
        loss = cfg.lambda_adv * adv + cfg.lambda_pix * pix
        return loss, {"loss_G": loss.detach(), "loss_adv": adv.detach(), "loss_pix": pix.detach()}


class StackGANFamily(Family):
    name = "stackgan"
    config_cls = StackGANConfig
    objective_cls = StackGANObjective
    data_kind = "pair"
    description = "StackGAN stage II after a DCGAN stage I, 2x super-resolution (Fussell & Moews 2019)"

    def build(self, cfg: StackGANConfig) -> dict[str, nn.Module]:
        return {"G": Generator(cfg), "D": build_discriminator(cfg)}

    def build_G(self, cfg: StackGANConfig) -> nn.Module:
        return Generator(cfg)

    def build_D(self, cfg: StackGANConfig) -> nn.Module:
        return build_discriminator(cfg)

    def references(self, cfg: StackGANConfig) -> dict[str, str]:
        return {"stage1": str(stage1_path(cfg.stage1))}

    def resolve_config(self, values: dict, data) -> dict:
        """Resolution and bands from the data; ``z_dim`` from the stage-I checkpoint, whose
        output side must be half the data's and whose bands must match."""
        from galaxy_core.io.checkpoint import read_meta

        values = super().resolve_config(values, data)
        stage1 = values.get("stage1", StackGANConfig.stage1)
        path = stage1_path(stage1)
        model = read_meta(path).get("model", {})
        res = values.get("resolution", StackGANConfig.resolution)
        if model.get("resolution") != res // 2 or model.get("num_bands") != values.get("num_bands", 3):
            raise ConfigError(f"model.stage1: {path} makes {model.get('num_bands')}-band {model.get('resolution')} px images; "
                              f"stage II on this data needs {values.get('num_bands')}-band {res // 2} px "
                              f"(data.resolution = {res})")
        if values.get("stage1_input", StackGANConfig.stage1_input) == "restretch" and hasattr(data, "description"):
            theirs = (read_meta(path).get("data") or {}).get("stretch")
            mine = data.description().get("stretch")
            if _is_flux(theirs) != _is_flux(mine):
                kind = {True: "flux with an asinh stretch", False: "values without an invertible stretch"}
                raise ConfigError(f"model.stage1: {path} makes {kind[_is_flux(theirs)]} but {data.name} holds "
                                  f"{kind[_is_flux(mine)]}; stage II cannot take its images in the encoding of its "
                                  "training inputs: train both stages on the same kind of data")
        values["z_dim"] = int(model.get("z_dim", values.get("z_dim", 100)))
        return values

    def attach_data(self, nets, data):
        """Stage II keeps its data's stretch and pixel scale: chained generation re-encodes
        stage-I images into that stretch (:func:`stage1_encoder`)."""
        nets["G"].data_description = {k: data.get(k) for k in ("stretch", "pixel_scale_arcsec")}

    def card_model(self, model):
        """Cards written before ``stage1_input`` existed chained stage I's values unchanged."""
        return {"stage1_input": "as_is", **model}

    def generate(self, nets, latents, *, labels=None, psi=1.0, noise_mode="const", refs=None):
        """Chained sample: ``{"stage1": (n, C, R/2, R/2), "stage2": (n, C, R, R)}`` in [-1, 1]
        from latents (n, z_dim) through the stage-I generator in ``refs["stage1"]`` and the
        stage-II generator ``nets["G"]``; stage-I images enter stage II as
        ``model.stage1_input`` says (:func:`stage1_encoder`), the ``"stage1"`` entry is in
        stage I's own range. A stage II in eval mode first re-estimates its
        batch-norm statistics on stage-I images of fixed latents (:func:`calibration_inputs`)
        whenever its weights changed since the last estimate: the EMA copy otherwise carries
        statistics of the live weights, measured on training inputs.

        Raises
        ------
        ValueError
            No stage-I model in ``refs``.
        """
        if not refs or "stage1" not in refs:
            raise ValueError("stackgan: chained generation needs the stage-I model (refs['stage1'])")
        s1 = refs["stage1"]
        x1 = s1.family.generate(s1.nets, latents.to(s1.device), labels=labels, psi=psi, noise_mode=noise_mode,
                                refs=s1.refs)
        x1 = list(x1.values())[-1] if isinstance(x1, dict) else x1
        G = nets["G"]
        encode = stage1_encoder(s1, G)
        device = next(G.parameters()).device
        ensure_calibrated(G, lambda: [encode(x) for x in calibration_inputs(s1, device, psi=psi,
                                                                              noise_mode=noise_mode)])
        x1 = x1.to(device)
        return {"stage1": x1, "stage2": G(encode(x1))}


def _is_flux(stretch: dict | None) -> bool:
    return isinstance(stretch, dict) and stretch.get("type") == "asinh"


def stage1_encoder(stage1, G: Generator):
    """How stage-I images enter stage II: a function of (N, C, R/2, R/2) images in stage I's
    model range returning them in the encoding of stage II's training inputs.

    With ``G.cfg.stage1_input == "restretch"`` and flux data at both stages (asinh stretches),
    :func:`~galaxy_core.io.stretch.restretch` from stage I's stretch to stage II's, the flux per
    pixel times the ratio of pixel areas (from the cards' ``pixel_scale_arcsec``, else 1/4 for
    the side doubled over the same field), so the total flux of the image is kept. Data
    without an invertible stretch (8-bit images, per-image min-max) are one linear encoding at
    both sides and enter unchanged, as every image does with ``"as_is"``.

    Parameters
    ----------
    stage1 : Pretrained
        The stage-I model (its card holds its data's stretch and pixel scale).
    G : Generator
        Stage II, after :meth:`StackGANFamily.attach_data`.

    Raises
    ------
    ValueError
        Stage II's data description is missing, or only one stage has flux data.
    """
    if G.cfg.stage1_input == "as_is":
        return lambda x: x
    mine = getattr(G, "data_description", None)
    if mine is None:
        raise ValueError("stackgan: stage II does not know the stretch of its data (StackGANFamily.attach_data "
                         "was not called after building it)")
    theirs = stage1.meta.get("data") or {}
    if _is_flux(theirs.get("stretch")) != _is_flux(mine.get("stretch")):
        raise ValueError(f"stackgan: {stage1.path} makes images of {theirs.get('kind')} data but stage II was trained "
                         "on another kind; its images cannot be put in stage II's encoding")
    if not _is_flux(mine.get("stretch")):
        return lambda x: x
    from galaxy_core.io.stretch import restretch, stretch_from_dict

    source, target = stretch_from_dict(theirs["stretch"]), stretch_from_dict(mine["stretch"])
    s_from, s_to = theirs.get("pixel_scale_arcsec"), mine.get("pixel_scale_arcsec")
    area = (s_to / s_from) ** 2 if s_from and s_to else (G.cfg.input_resolution / G.cfg.resolution) ** 2
    return lambda x: restretch(x, source=source, target=target, flux_scale=area)


@torch.no_grad()
def calibration_inputs(stage1, device: torch.device, *, psi: float = 1.0, noise_mode: str = "const",
                       n: int = CALIBRATION_SAMPLES, batch: int = CALIBRATION_BATCH,
                       seed: int = CALIBRATION_SEED) -> list[torch.Tensor]:
    """Stage-I images of fixed latents (``stage1.latents(seed, n)``), in batches on ``device``:
    what a sampling stage II re-estimates its batch-norm statistics on. Calibrating on stage-I
    output rather than on the training inputs (2x2 means of real 128 px images) also adapts the
    statistics to the inputs the chain actually gives it."""
    out = []
    for z in stage1.latents(seed, n).split(batch):
        x = stage1.family.generate(stage1.nets, z.to(stage1.device), psi=psi, noise_mode=noise_mode, refs=stage1.refs)
        out.append((list(x.values())[-1] if isinstance(x, dict) else x).to(device))
    return out


def num_conv_layers(G: Generator) -> int:
    """Convolutions in a stage-II generator (16 with the default six residual blocks)."""
    return sum(isinstance(m, nn.Conv2d) for m in G.modules())

