"""Differentiable augmentation of every image a discriminator sees, with adaptive probability.

Augmenting real images only teaches the generator to produce augmented images; augmenting real
and generated images alike, with operations gradients flow through, does not (Zhao et al. 2020,
"Differentiable Augmentation for Data-Efficient GAN Training"; Karras et al. 2020, "Training
Generative Adversarial Networks with Limited Data", StyleGAN2-ADA). Each operation is applied to
each image independently with probability ``p``.

Policies
--------
``rgb`` (colour images): translation by up to 1/8 of the side (background fill), cutout of a
square half the side (filled with the image's median, its background), and colour (brightness,
saturation, contrast).
``bands`` (survey data, physics-safe: no operation mixes bands or changes a colour): flips,
90-degree turns, sub-pixel shifts (bilinear, up to half a pixel), and added Gaussian noise.

Grids of cell classes (the position GAN's one-hot maps) take only operations that move whole
cells, so every augmented grid still has one class per cell: flips, 90-degree turns and
translation for ``auto``, cutout on request, with the empty class filling what they bring in
(:data:`GRID_OPS`). Sub-pixel shifts and noise would put values between classes into the
one-hot maps, and colour has no meaning there; they are refused.

Adaptive p (ADA): the loop collects ``r_t = E[sign(D(real))]`` over ``interval`` steps and moves
``p`` by ``sign(r_t - target) * images / (speed_kimg * 1000)``, clamped to [0, 1], so p can go
from 0 to 1 in ``speed_kimg`` thousand images. A discriminator that overfits (r_t near 1) raises
p. Under torchrun the sums are all-reduced first, so every rank holds the same p. The sums
collected since the last update are saved with p (:meth:`AdaptiveAugment.state_dict`), so a run
resumed between two updates moves p exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from galaxy_core.errors import ConfigError

OPS = {
    "rgb": ("translation", "cutout", "color"),
    "bands": ("flip", "rot90", "shift", "noise"),
}
ALL_OPS = ("translation", "cutout", "color", "flip", "rot90", "shift", "noise")
GRID_OPS = ("flip", "rot90", "translation", "cutout")  # whole cells only; "auto" on grids leaves out cutout
MODES = ("off", "fixed", "ada")


def policy_ops(policy: str, channels: Sequence[str], *, grid: bool = False) -> tuple[str, ...]:
    """The operations of a policy: ``auto`` (``rgb`` for R, G, B data, else ``bands``; on grids
    of cell classes flip, rot90, translation), ``rgb``, ``bands``, or a comma-separated list of
    operation names.

    Parameters
    ----------
    policy : str
    channels : sequence of str
        The dataset's channel names.
    grid : bool
        The data are grids of cell classes (one-hot maps): only :data:`GRID_OPS` are allowed.

    Raises
    ------
    ConfigError
        Unknown operation, colour operations asked for on data that is not R, G, B, or an
        operation that does not move whole cells asked for on grids.
    """
    is_rgb = [c.upper() for c in channels] == ["R", "G", "B"]
    if policy == "auto":
        if grid:
            return GRID_OPS[:3]
        return OPS["rgb"] if is_rgb else OPS["bands"]
    ops = OPS.get(policy) or tuple(o.strip() for o in policy.split(",") if o.strip())
    bad = [o for o in ops if o not in ALL_OPS]
    if bad:
        raise ConfigError(f"augment.diff_policy: unknown operation(s) {', '.join(bad)}; known: {', '.join(ALL_OPS)}")
    off_grid = [o for o in ops if o not in GRID_OPS]
    if grid and off_grid:
        raise ConfigError(f"augment.diff_policy: {', '.join(off_grid)} cannot augment grids of cell classes (values "
                          f"between classes, or colour, in a one-hot map); use {', '.join(GRID_OPS)}, or 'auto'")
    if "color" in ops and not is_rgb:
        raise ConfigError(f"augment.diff_policy: 'color' needs R, G, B data but the channels are {list(channels)}; "
                          "use 'bands' (flips, turns, sub-pixel shifts, noise)")
    return ops


def _mask(n: int, p: float, g: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=g) < p).to(device)


def _sel(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def _fill(x: torch.Tensor, fill: Sequence[float] | None, default: torch.Tensor) -> torch.Tensor:
    """``fill`` per channel as (1, C, 1, 1), or ``default`` (N, C, 1, 1) when there is none."""
    if fill is None:
        return default
    return torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def translation(x: torch.Tensor, g: torch.Generator, p: float, *, ratio: float = 0.125,
                fill: Sequence[float] | None = None) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side (integer pixels), filling with its minimum
    (or with ``fill``, one value per channel: the empty class of a grid)."""
    n, _, h, w = x.shape
    m = _mask(n, p, g, x.device)
    sx = (torch.randint(-int(h * ratio), int(h * ratio) + 1, (n,), generator=g)).to(x.device)
    sy = (torch.randint(-int(w * ratio), int(w * ratio) + 1, (n,), generator=g)).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    src_y = gy[None] - sy.view(-1, 1, 1)
    src_x = gx[None] - sx.view(-1, 1, 1)
    valid = ((src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)).unsqueeze(1)
    idx = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(n, 1, -1).expand(-1, x.shape[1], -1)
    moved = torch.gather(x.flatten(2), 2, idx).view_as(x)
    value = _fill(x, fill, x.detach().amin(dim=(2, 3), keepdim=True))
    return _sel(m, torch.where(valid, moved, value), x)


def cutout(x: torch.Tensor, g: torch.Generator, p: float, *, ratio: float = 0.5,
           fill: Sequence[float] | None = None) -> torch.Tensor:
    """Fill a random square of ``ratio`` of the side with the image's median (its background),
    or with ``fill``, one value per channel (the empty class of a grid)."""
    n, _, h, w = x.shape
    m = _mask(n, p, g, x.device)
    ch, cw = int(h * ratio), int(w * ratio)
    oy = torch.randint(0, h - ch + 1, (n,), generator=g).to(x.device)
    ox = torch.randint(0, w - cw + 1, (n,), generator=g).to(x.device)
    gy = torch.arange(h, device=x.device).view(1, -1, 1)
    gx = torch.arange(w, device=x.device).view(1, 1, -1)
    box = ((gy >= oy.view(-1, 1, 1)) & (gy < (oy + ch).view(-1, 1, 1)) &
           (gx >= ox.view(-1, 1, 1)) & (gx < (ox + cw).view(-1, 1, 1))).unsqueeze(1)
    value = _fill(x, fill, x.detach().flatten(2).median(dim=2).values[..., None, None])
    return _sel(m, torch.where(box, value, x), x)


def color(x: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    """Brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) in model range."""
    n = x.shape[0]
    m = _mask(n, p, g, x.device)
    b = (torch.rand(n, 1, 1, 1, generator=g) - 0.5).to(x.device)
    s = (torch.rand(n, 1, 1, 1, generator=g) * 2).to(x.device)
    c = (torch.rand(n, 1, 1, 1, generator=g) + 0.5).to(x.device)
    y = x + b
    mean_c = y.mean(dim=1, keepdim=True)
    y = (y - mean_c) * s + mean_c
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * c + mean
    return _sel(m, y, x)


def flip(x: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    """Left-right flip with probability p, then top-bottom flip with probability p."""
    n = x.shape[0]
    x = _sel(_mask(n, p, g, x.device), x.flip(3), x)
    return _sel(_mask(n, p, g, x.device), x.flip(2), x)


def rot90(x: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    """A random multiple of 90 degrees (1, 2 or 3 quarter turns) with probability p."""
    n = x.shape[0]
    m = _mask(n, p, g, x.device)
    k = torch.randint(1, 4, (n,), generator=g).to(x.device)
    out = x
    for q in (1, 2, 3):
        out = _sel(m & (k == q), torch.rot90(x, q, dims=(2, 3)), out)
    return out


def shift(x: torch.Tensor, g: torch.Generator, p: float, *, max_px: float = 0.5) -> torch.Tensor:
    """Sub-pixel shift by up to ``max_px`` pixels in each axis (bilinear, border replicated)."""
    n, _, h, w = x.shape
    m = _mask(n, p, g, x.device)
    d = ((torch.rand(n, 2, generator=g) * 2 - 1) * max_px).to(x.device, x.dtype)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = d[:, 0] * 2 / w
    theta[:, 1, 2] = d[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return _sel(m, F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False), x)


def noise(x: torch.Tensor, g: torch.Generator, p: float, *, sigma: float = 0.03) -> torch.Tensor:
    """Add Gaussian noise of standard deviation up to ``sigma`` (model range) per image."""
    n = x.shape[0]
    m = _mask(n, p, g, x.device)
    s = (torch.rand(n, 1, 1, 1, generator=g) * sigma).to(x.device, x.dtype)
    e = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    return _sel(m, x + s * e, x)


_FUNCS = {"translation": translation, "cutout": cutout, "color": color, "flip": flip, "rot90": rot90,
          "shift": shift, "noise": noise}
_FILLS = ("translation", "cutout")  # the operations that bring in a fill value


def empty_cell(num_classes: int) -> tuple[float, ...]:
    """The one-hot code of class 0 (empty) in model range: ``(1, -1, ..., -1)``, K values."""
    return (1.0,) + (-1.0,) * (int(num_classes) - 1)


@dataclass
class AdaptiveAugment:
    """Differentiable augmentation with fixed or adaptive probability ``p``.

    Parameters
    ----------
    ops : tuple of str
        Operations, applied in order (see :func:`policy_ops`).
    mode : {"off", "fixed", "ada"}
    p : float
        Current probability in [0, 1] (the start value for ``ada``).
    target : float
        ADA target for ``r_t = E[sign(D(real))]`` (0.6 in StyleGAN2-ADA).
    interval : int
        Steps between updates of p.
    speed_kimg : float
        Thousands of images over which p can move by 1.
    fill : tuple of float, optional
        What translation and cutout bring in, per channel (model range); None: each image's
        minimum (translation) or median (cutout). For one-hot grids the empty class,
        ``(1, -1, ..., -1)`` (:func:`empty_cell`).
    r_t : float or None
        The latest ``r_t`` (ada), logged with every metrics record until the next update.
    """

    ops: tuple[str, ...]
    mode: str = "off"
    p: float = 0.0
    target: float = 0.6
    interval: int = 4
    speed_kimg: float = 100.0
    fill: tuple[float, ...] | None = None
    r_t: float | None = None
    _sign_sum: float = 0.0
    _count: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"augment.diff: must be one of {', '.join(MODES)}, got {self.mode!r}")

    @property
    def active(self) -> bool:
        return self.mode != "off" and (self.p > 0 or self.mode == "ada")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Augment (N, C, H, W) images; identity (no random numbers drawn) when p is 0."""
        if self.mode == "off" or self.p <= 0:
            return x
        for op in self.ops:
            if op in _FILLS and self.fill is not None:
                x = _FUNCS[op](x, g, self.p, fill=self.fill)
            else:
                x = _FUNCS[op](x, g, self.p)
        return x

    def observe(self, logits: torch.Tensor) -> None:
        """Accumulate the signs of D's logits on real images."""
        if self.mode == "ada":
            self._sign_sum += float(torch.sign(logits.detach().float()).sum())
            self._count += int(logits.numel())

    def update(self, *, step: int, images_per_step: int, all_reduce=None) -> float | None:
        """Adjust p every ``interval`` steps (ada only); returns r_t when it updated.

        ``all_reduce(tensor)`` sums a tensor over ranks under torchrun.
        """
        if self.mode != "ada" or step % self.interval != 0:
            return None
        t = torch.tensor([self._sign_sum, float(self._count)], dtype=torch.float64)
        if all_reduce is not None:
            t = all_reduce(t)
        self._sign_sum, self._count = 0.0, 0
        if t[1] <= 0:
            return None
        r_t = float(t[0] / t[1])
        adjust = math.copysign(1.0, r_t - self.target) * images_per_step * self.interval / (self.speed_kimg * 1000)
        self.p = float(min(max(self.p + adjust, 0.0), 1.0))
        self.r_t = r_t
        return r_t

    def state_dict(self) -> dict:
        """``p``, the latest ``r_t`` and the sign sums collected since the last update of p
        (ada): checkpoints fall between updates (every ``log.checkpoint_every`` steps, p every
        ``interval``), and a resumed run must update p from the same sums, and log the same
        ``r_t`` until then, as an uninterrupted one."""
        return {"p": self.p, "r_t": self.r_t, "sign_sum": self._sign_sum, "count": self._count}

    def load_state_dict(self, state: dict, *, with_sums: bool = True) -> None:
        """Restore :meth:`state_dict`. The sums are replaced, never kept: a state without them
        (a checkpoint written before they were saved) or ``with_sums=False`` (a torchrun rank
        other than 0, see :meth:`gather`) starts them at zero."""
        self.p = float(state.get("p", self.p))
        self.r_t = state.get("r_t")
        self._sign_sum = float(state.get("sign_sum", 0.0)) if with_sums else 0.0
        self._count = int(state.get("count", 0)) if with_sums else 0

    def gather(self, all_reduce, *, keep: bool) -> None:
        """Under torchrun, sum the sign sums over the ranks and keep the total on one rank
        (``keep``) and zero on the others, so that rank 0's :meth:`state_dict` holds every
        rank's share. The next :meth:`update` sums over the ranks again and sees the same
        total. Every rank must call it (it is a collective)."""
        if self.mode != "ada":
            return
        t = all_reduce(torch.tensor([self._sign_sum, float(self._count)], dtype=torch.float64))
        self._sign_sum, self._count = (float(t[0]), int(t[1])) if keep else (0.0, 0)
