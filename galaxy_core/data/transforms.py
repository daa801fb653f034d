"""Image transforms: crop and resize when preparing data, batch augmentation when training.

Preparation works on numpy arrays ``(C, H, W)`` once per image. Augmentation works on torch
batches ``(N, C, H, W)`` in model range [-1, 1] inside the training loop, on CPU or GPU: every
function draws one random decision per image from the caller's ``torch.Generator`` and
applies it to the whole batch at once (no Python loop over images), so a seeded generator gives
the same augmented batch on every run.

Galaxies have no preferred orientation or handedness, so flips and rotations give new,
equally valid training images (Dieleman et al. 2015, MNRAS 450, 1441). Hue shifts only make
sense for RGB images and are refused for physical band data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from galaxy_core.errors import ConfigError
from galaxy_core.io.units import resample_flux

# --------------------------------------------------------------------------- preparation


def centre_crop_box(shape: tuple[int, int], fraction: float) -> tuple[int, int, int]:
    """Where :func:`centre_crop` cuts: ``(top, left, side)`` in pixels of an ``(H, W)`` image.

    Parameters
    ----------
    shape : (int, int)
        Image height and width, >= 1.
    fraction : float
        Side of the kept square as a fraction of ``n = min(H, W)``, in (0, 1].

    Returns
    -------
    top, left, side : int
        The kept square is ``[top : top + side, left : left + side]``.

    Notes
    -----
    The central ``n x n`` square is taken first (when ``H - W`` is odd its extra row or
    column is dropped at the bottom/right). From it the same margin ``m``, the whole number
    nearest to ``n (1 - fraction) / 2`` (a tie keeps the larger square), is removed on every
    side, so ``side = n - 2 m`` has
    the parity of ``n`` and the square's centre stays exactly where it was: a galaxy centred
    in the stamp stays centred, and pixel positions map as ``x' = x - left``. ``m`` is at
    most ``(n - 1) // 2``, so at least 1 (odd ``n``) or 2 (even ``n``) pixels are kept.
    """
    if isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ValueError(f"crop fraction must be in (0, 1], got {fraction!r}")
    h, w = (int(v) for v in shape)
    if h < 1 or w < 1:
        raise ValueError(f"cannot crop an empty image of shape {(h, w)}")
    n = min(h, w)
    # nearest whole margin, a tie (e.g. 2.5) keeping the larger side; 1e-9 absorbs round-off
    margin = min(math.ceil(n * (1.0 - fraction) / 2.0 - 0.5 - 1e-9), (n - 1) // 2)
    side = n - 2 * margin
    return (h - n) // 2 + margin, (w - n) // 2 + margin, side


def centre_crop(img: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the central ``fraction`` of the central square of an image.

    The one centre crop of the project (FITS folders, image folders and ``sim`` use it).

    Parameters
    ----------
    img : ndarray, (..., H, W)
        Any dtype; ``(C, H, W)`` or ``(N, C, H, W)``.
    fraction : float
        Side of the kept square as a fraction of ``min(H, W)``, in (0, 1].

    Returns
    -------
    ndarray, (..., S, S)
        A view; ``S`` and the offsets are those of :func:`centre_crop_box` (a symmetric
        margin, so the centre does not move).

    Raises
    ------
    ValueError
        ``fraction`` outside (0, 1].
    """
    top, left, side = centre_crop_box(img.shape[-2:], fraction)
    return img[..., top : top + side, left : left + side]


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``(C, H, W)`` image to ``(C, size, size)`` with antialiasing.

    Parameters
    ----------
    img : ndarray, (C, H, W)
        uint8 (0..255) 8-bit image, or float flux.
    size : int
        Output side in pixels. Non-square input is stretched; crop it first with
        :func:`centre_crop`.

    Returns
    -------
    ndarray, (C, size, size)
        uint8 for uint8 input (Lanczos via PIL), float32 flux otherwise.

    Notes
    -----
    Float images are flux and follow the project's one flux convention
    (:func:`galaxy_core.io.units.resample_flux`): the **total flux is kept**, so output
    pixels hold flux per output pixel and the pixel scale becomes
    ``pixel_scale * side / size``. Interpolation is bilinear after a Gaussian antialiasing
    filter when shrinking, so positive flux stays positive.
    """
    if img.ndim != 3:
        raise ValueError(f"resize expects (C, H, W), got shape {img.shape}")
    if img.dtype == np.uint8:
        if img.shape[-2:] == (size, size):
            return img.copy()
        return _resize_uint8(img, size)
    return resample_flux(img, size).astype(np.float32)


def _resize_uint8(img: np.ndarray, size: int) -> np.ndarray:
    """Lanczos resize of 8-bit planes with PIL (its kernel widens when shrinking)."""
    out = np.empty((img.shape[0], size, size), np.uint8)
    if img.shape[0] == 3:
        rgb = Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)), "RGB")
        out[:] = np.asarray(rgb.resize((size, size), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
        return out
    for c in range(img.shape[0]):
        plane = Image.fromarray(np.ascontiguousarray(img[c]), "L")
        out[c] = np.asarray(plane.resize((size, size), Image.Resampling.LANCZOS))
    return out


# --------------------------------------------------------------------------- augmentation


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """n uniform [0, 1) draws from ``generator`` (on its own device), moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gen_device).to(device)


def _per_image(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, 1, 1, 1)  # (N,) -> (N, 1, 1, 1) to broadcast over (N, C, H, W)


def random_flip(
    x: torch.Tensor,
    generator: torch.Generator | None,
    *,
    horizontal: bool = True,
    vertical: bool = True,
) -> torch.Tensor:
    """Flip each image left-right and/or top-bottom with probability 1/2 each.

    Parameters
    ----------
    x : Tensor, (N, C, H, W)
        Any range; returned unchanged in value (a pure permutation of pixels).
    generator : torch.Generator or None
        Source of randomness (None: torch's global generator).
    horizontal, vertical : bool
        Which flips to draw.
    """
    n = x.shape[0]
    if horizontal:
        x = torch.where(_per_image(_uniform(n, generator, x.device) < 0.5), x.flip(-1), x)
    if vertical:
        x = torch.where(_per_image(_uniform(n, generator, x.device) < 0.5), x.flip(-2), x)
    return x


def random_rot90(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Rotate each square image by a random multiple of 90 degrees (exact, no resampling).

    Parameters
    ----------
    x : Tensor, (N, C, S, S)
    generator : torch.Generator or None

    Notes
    -----
    ``k`` quarter turns (as ``torch.rot90(x, k, dims=(-2, -1))``) are built from an optional
    transpose followed by optional flips: k=1 is transpose then flip rows, k=2 flips both
    axes, k=3 is transpose then flip columns.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"random_rot90 needs square images, got {tuple(x.shape[-2:])}")
    k = (_uniform(x.shape[0], generator, x.device) * 4).long().clamp_(max=3)  # (N,) in 0..3
    odd = _per_image(k % 2 == 1)
    x = torch.where(odd, x.transpose(-2, -1), x)
    flip_rows = _per_image((k == 1) | (k == 2))
    flip_cols = _per_image((k == 2) | (k == 3))
    x = torch.where(flip_rows, x.flip(-2), x)
    return torch.where(flip_cols, x.flip(-1), x)


def random_rotate(
    x: torch.Tensor,
    generator: torch.Generator | None,
    *,
    angles: Sequence[float] | None = None,
    step_degrees: float | None = None,
    fill: str = "reflect",
) -> torch.Tensor:
    """Rotate each image by a random angle about its centre (bilinear resampling).

    Parameters
    ----------
    x : Tensor, (N, C, H, W) in [-1, 1]
    generator : torch.Generator or None
    angles : sequence of float, optional
        Degrees to choose from uniformly (e.g. ``[0, 45, 90]``).
    step_degrees : float, optional
        Choose uniformly among multiples of this step in [0, 360) (45 gives 8 angles).
        With neither ``angles`` nor ``step_degrees`` the angle is uniform in [0, 360).
    fill : {"reflect", "constant"}
        What fills the corners brought in from outside the image: a mirror image of the
        border (``grid_sample`` reflection padding), or the background value -1.

    Returns
    -------
    Tensor, (N, C, H, W)
        Same dtype and device. A positive angle turns the image content counter-clockwise
        as displayed (row 0 at the top); 90 degrees equals ``torch.rot90(x, 1, (-2, -1))``
        for square images.
    """
    if fill not in ("reflect", "constant"):
        raise ValueError(f"fill must be 'reflect' or 'constant', got {fill!r}")
    n, _, h, w = x.shape
    u = _uniform(n, generator, x.device)
    if angles is not None:
        table = torch.as_tensor(list(angles), dtype=torch.float32, device=x.device)
        if table.numel() == 0:
            raise ValueError("angles must not be empty")
        deg = table[(u * table.numel()).long().clamp_(max=table.numel() - 1)]
    elif step_degrees is not None:
        if not 0 < step_degrees <= 360:
            raise ValueError(f"step_degrees must be in (0, 360], got {step_degrees}")
        count = max(1, int(round(360.0 / step_degrees)))
        deg = (u * count).floor().clamp_(max=count - 1) * step_degrees
    else:
        deg = u * 360.0
    theta = _rotation_theta(deg, h, w).to(x.dtype)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if fill == "reflect":
        return F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    # zeros padding on x + 1 puts the background value -1 outside the image.
    return F.grid_sample(x + 1, grid, padding_mode="zeros", align_corners=False) - 1


def _rotation_theta(deg: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Affine matrices (N, 2, 3) mapping output to input normalised coordinates.

    In pixel units (x right, y down) the output pixel at ``p`` samples the input at
    ``R(angle) p`` (``R`` the usual rotation matrix); with y pointing down this turns the
    content counter-clockwise as displayed. The ``h/w`` factors undo the different
    normalisation of the two axes for non-square images.
    """
    rad = deg * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    theta = torch.zeros(deg.shape[0], 2, 3, dtype=torch.float32, device=deg.device)
    theta[:, 0, 0] = c
    theta[:, 0, 1] = -s * (h / w)
    theta[:, 1, 0] = s * (w / h)
    theta[:, 1, 1] = c
    return theta


# Luma-chroma transform (NTSC YIQ); rows give Y, I, Q from R, G, B.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
# Parameters are built in float32 on the batch's device (float64 is missing on some GPUs).


def random_hue_shift(
    x: torch.Tensor,
    generator: torch.Generator | None,
    *,
    p: float = 0.25,
    max_shift: float = 30.0,
    channels: Sequence[str] | None = None,
) -> torch.Tensor:
    """Rotate the hue of each RGB image with probability ``p`` by up to ``max_shift`` degrees.

    The colour is rotated about the grey axis in YIQ space, so the luma Y is unchanged before
    the result is clipped back to [-1, 1]. Because grey (R = G = B) maps to itself, the linear
    map applies directly to model-range values.

    Parameters
    ----------
    x : Tensor, (N, 3, H, W) in [-1, 1]
        R, G, B images.
    generator : torch.Generator or None
    p : float
        Probability that an image is shifted, in [0, 1].
    max_shift : float
        Shifts are uniform in [-max_shift, max_shift] degrees of hue angle.
    channels : sequence of str, optional
        The dataset's channel names; anything but R, G, B is refused.

    Raises
    ------
    ValueError
        ``x`` does not have 3 channels or ``channels`` are not R, G, B: hue has no meaning
        for single-band or physical band data (g, r, i).
    """
    if x.shape[1] != 3 or (channels is not None and not _is_rgb(channels)):
        names = list(channels) if channels is not None else f"{x.shape[1]} channels"
        raise ValueError(f"hue shift needs R, G, B images, got {names}; hue is meaningless for "
                         "grey or physical band data, set hue_p to 0")
    n = x.shape[0]
    apply = _uniform(n, generator, x.device) < p
    angle = (_uniform(n, generator, x.device) * 2 - 1) * math.radians(max_shift)
    m = _hue_matrices(angle).to(x.dtype)  # (N, 3, 3)
    shifted = torch.einsum("nij,njhw->nihw", m, x).clamp_(-1.0, 1.0)
    return torch.where(_per_image(apply), shifted, x)  # untouched images stay bit-identical


def _is_rgb(channels: Sequence[str]) -> bool:
    return [c.upper() for c in channels] == ["R", "G", "B"]


def _hue_matrices(angle: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) RGB -> RGB matrices rotating I, Q by ``angle`` radians."""
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(angle.shape[0], 3, 3, dtype=torch.float32, device=angle.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = c, -s
    rot[:, 2, 1], rot[:, 2, 2] = s, c
    to_rgb = _YIQ_TO_RGB.to(angle.device, torch.float32)
    return to_rgb @ rot @ _RGB_TO_YIQ.to(angle.device, torch.float32)


# --------------------------------------------------------------------------- config

_ROTATE_CHOICES = ("none", "45", "any")


@dataclass
class Augment:
    """Training-time augmentation of real batches, as stored in a run config.

    Parameters
    ----------
    flip_h, flip_v : bool
        Random left-right / top-bottom flips.
    rot90 : bool
        Random multiples of 90 degrees (exact).
    rotate : {"none", "45", "any"}
        Extra resampled rotation: multiples of 45 degrees, or any angle.
    rotate_fill : {"reflect", "constant"}
        Corner fill for ``rotate`` (mirror or background -1).
    hue_p : float
        Probability of a hue shift per image (RGB data only), in [0, 1].
    hue_max_shift : float
        Largest hue shift in degrees.
    """

    flip_h: bool = True
    flip_v: bool = True
    rot90: bool = True
    rotate: str = "none"
    rotate_fill: str = "reflect"
    hue_p: float = 0.0
    hue_max_shift: float = 30.0

    def __post_init__(self):
        for name in ("flip_h", "flip_v", "rot90"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"augment.{name} must be true or false, "
                                  f"got {getattr(self, name)!r}")
        if self.rotate is None or self.rotate is False:
            self.rotate = "none"
        self.rotate = str(self.rotate).lower()
        if self.rotate not in _ROTATE_CHOICES:
            raise ConfigError(f"augment.rotate must be one of {', '.join(_ROTATE_CHOICES)}, "
                              f"got {self.rotate!r}")
        if self.rotate_fill not in ("reflect", "constant"):
            raise ConfigError(f"augment.rotate_fill must be 'reflect' or 'constant', "
                              f"got {self.rotate_fill!r}")
        if not isinstance(self.hue_p, (int, float)) or not 0 <= self.hue_p <= 1:
            raise ConfigError(f"augment.hue_p must be a number in [0, 1], got {self.hue_p!r}")
        if not isinstance(self.hue_max_shift, (int, float)) or not 0 <= self.hue_max_shift <= 180:
            raise ConfigError(f"augment.hue_max_shift must be in [0, 180] degrees, "
                              f"got {self.hue_max_shift!r}")

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "Augment":
        """Build from a config mapping; an unknown key is a :class:`ConfigError`."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"augment: unknown key {unknown[0]!r}; known keys are "
                              f"{', '.join(sorted(known))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def check_channels(self, channels: Sequence[str]) -> None:
        """Refuse a hue shift for data that is not R, G, B (raise :class:`ConfigError`)."""
        if self.hue_p > 0 and not _is_rgb(channels):
            raise ConfigError(f"augment.hue_p = {self.hue_p} but the data's channels are "
                              f"{list(channels)}; hue shifts need R, G, B images, set hue_p to 0")

    @property
    def active(self) -> bool:
        return (self.flip_h or self.flip_v or self.rot90 or self.rotate != "none"
                or self.hue_p > 0)

    def __call__(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None,
        *,
        channels: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Augment a batch ``(N, C, H, W)`` in [-1, 1]; returns the same shape and range."""
        if self.flip_h or self.flip_v:
            x = random_flip(x, generator, horizontal=self.flip_h, vertical=self.flip_v)
        if self.rot90:
            x = random_rot90(x, generator)
        if self.rotate == "45":
            x = random_rotate(x, generator, step_degrees=45.0, fill=self.rotate_fill)
        elif self.rotate == "any":
            x = random_rotate(x, generator, fill=self.rotate_fill)
        if self.hue_p > 0:
            x = random_hue_shift(x, generator, p=self.hue_p, max_shift=self.hue_max_shift,
                                 channels=channels)
        return x
