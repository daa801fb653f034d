"""Stretches between physical flux and the model range [-1, 1].

The default is an invertible per-band asinh stretch (Lupton et al. 1999, AJ 118, 1406)::

    u(f) = asinh(f / softening)
    y    = 2 (u(f) - u(lo)) / (u(hi) - u(lo)) - 1

so ``lo`` maps to -1 and ``hi`` to +1. Its parameters are stored in the dataset manifest and in
every checkpoint, so generated images can be turned back into flux (:meth:`AsinhStretch.inverse`)
for photometry and FITS output. Data outside [lo, hi] is clipped when stored for training; the
clipped fraction is recorded. :func:`stretch_into` is the one function every physical data
source uses to fit a stretch and fill its prepared array.

The per-image min-max normalisation used in the StyleGAN galaxy thesis is offered as
:func:`minmax_normalise`; it is *not* flux-preserving (every image is rescaled on its own) and
is labelled so wherever it is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from galaxy_core.progress import Progress, ProgressBar


@dataclass(frozen=True)
class AsinhStretch:
    """Per-band invertible asinh stretch.

    Parameters
    ----------
    softening : tuple of float
        Per band, flux units; below about this flux the stretch is linear, above logarithmic.
    lo, hi : tuple of float
        Per band, the fluxes mapped to -1 and +1.
    """

    softening: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]

    type = "asinh"

    def _params(self, ndim: int):
        shape = (-1,) + (1,) * 2  # per band over (H, W)
        s = np.asarray(self.softening, np.float64).reshape(shape)
        ulo = np.arcsinh(np.asarray(self.lo, np.float64).reshape(shape) / s)
        uhi = np.arcsinh(np.asarray(self.hi, np.float64).reshape(shape) / s)
        return s, ulo, uhi

    def forward(self, flux: np.ndarray) -> np.ndarray:
        """Flux ``(..., C, H, W)`` to model range (float32, not clipped)."""
        s, ulo, uhi = self._params(flux.ndim)
        u = np.arcsinh(np.asarray(flux, np.float64) / s)
        return (2.0 * (u - ulo) / (uhi - ulo) - 1.0).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Model range ``(..., C, H, W)`` back to flux (float64)."""
        s, ulo, uhi = self._params(np.ndim(y))
        u = (np.asarray(y, np.float64) + 1.0) / 2.0 * (uhi - ulo) + ulo
        return s * np.sinh(u)

    def to_dict(self) -> dict:
        d = {k: list(map(float, v)) for k, v in asdict(self).items()}
        return {"type": self.type, "flux_preserving": True, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "AsinhStretch":
        if d.get("type") != cls.type:
            raise ValueError(f"not an asinh stretch: {d.get('type')!r}")
        return cls(tuple(d["softening"]), tuple(d["lo"]), tuple(d["hi"]))

    @classmethod
    def fit(
        cls,
        flux: np.ndarray,
        *,
        softening_sigmas: float = 3.0,
        lo_sigmas: float = 3.0,
        hi_percentile: float = 99.99,
    ) -> "AsinhStretch":
        """Choose parameters from data ``(N, C, H, W)`` (or ``(C, H, W)``).

        The softening is ``softening_sigmas`` times the robust (MAD) noise of each band, ``lo``
        sits ``lo_sigmas`` noise-sigmas below the median background, ``hi`` is a high percentile.
        """
        flux = np.asarray(flux, np.float64)
        if flux.ndim == 3:
            flux = flux[None]
        per_band = np.moveaxis(flux, 1, 0).reshape(flux.shape[1], -1)
        soft, lo, hi = [], [], []
        for band in per_band:
            band = band[np.isfinite(band)]
            med = float(np.median(band))
            sigma = 1.4826 * float(np.median(np.abs(band - med)))
            if sigma <= 0:
                sigma = float(np.std(band)) or 1.0
            top = float(np.percentile(band, hi_percentile))
            soft.append(softening_sigmas * sigma)
            lo.append(med - lo_sigmas * sigma)
            hi.append(max(top, med + 10 * sigma))
        return cls(tuple(soft), tuple(lo), tuple(hi))


def restretch(x, *, source: AsinhStretch, target: AsinhStretch, flux_scale: float = 1.0):
    """Model-range images of one asinh stretch re-encoded in another, through flux.

    ``target.forward(flux_scale * source.inverse(x))``, clipped to [-1, 1] as stored data
    are, computed in torch on ``x``'s device. A chained model uses it to hand the images of a
    stage trained on one stretch to a stage trained on another (StackGAN: the 64 px stage I
    and the 128 px stage II, whose stretches are fitted on data of different pixel sizes).

    Parameters
    ----------
    x : Tensor, (N, C, H, W), float, in [-1, 1]
        Images in the model range of ``source``.
    source, target : AsinhStretch
        The stretch of ``x`` and the one to re-encode into; one band each per channel.
    flux_scale : float
        Factor applied to the flux per pixel between the two, e.g. the ratio of pixel areas:
        with total flux kept, a pixel of the grid twice as fine holds 1/4 of the flux.

    Returns
    -------
    Tensor, (N, C, H, W), same dtype and device as ``x``, in [-1, 1]
    """
    import torch

    def params(st: AsinhStretch):
        s, ulo, uhi = st._params(4)  # (C, 1, 1) float64
        return [torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in (s, ulo, uhi)]

    s1, lo1, hi1 = params(source)
    s2, lo2, hi2 = params(target)
    flux = s1 * torch.sinh((x + 1) / 2 * (hi1 - lo1) + lo1)  # flux per source pixel
    u = torch.asinh(flux * flux_scale / s2)
    return (2 * (u - lo2) / (hi2 - lo2) - 1).clamp(-1.0, 1.0)


def stretch_from_dict(d: dict | None):
    """Rebuild a stretch from its stored description (None for 8-bit image data)."""
    if d is None:
        return None
    if d.get("type") == "asinh":
        return AsinhStretch.from_dict(d)
    if d.get("type") == "minmax":
        return None  # per-image, not invertible
    raise ValueError(f"unknown stretch type {d.get('type')!r}")


MINMAX_DESCRIPTION = {
    "type": "minmax",
    "flux_preserving": False,
    "note": "per-image min-max to [-1, 1] (StyleGAN galaxy thesis); fluxes cannot be recovered",
}


def minmax_normalise(flux: np.ndarray) -> np.ndarray:
    """Per-image min-max to [-1, 1] over all bands of each image. NOT flux-preserving.

    ``flux`` is ``(N, C, H, W)``; a constant image maps to all -1.
    """
    flux = np.asarray(flux, np.float64)
    axes = tuple(range(1, flux.ndim))
    lo = flux.min(axis=axes, keepdims=True)
    span = flux.max(axis=axes, keepdims=True) - lo
    span[span == 0] = 1.0
    return (2.0 * (flux - lo) / span - 1.0).astype(np.float32)


FIT_MAX_VALUES = 20_000_000  # pixel values used to fit the asinh stretch (evenly spaced images)


def stretch_into(
    flux,
    out: np.ndarray,
    *,
    normalisation: str,
    resample: Callable[[np.ndarray], np.ndarray] | None = None,
    chunk: int = 256,
    fit_max_values: int = FIT_MAX_VALUES,
    progress: Progress = False,
) -> dict:
    """Stretch a stack of flux images into a float16 model-range array, chunk by chunk.

    The one preparation step shared by every physical data source (FITS folders, ``sim``):
    fit the stretch on evenly spaced images, then stretch, clip to [-1, 1] and store every
    chunk, so neither the flux nor the result has to be held in memory at once.

    Parameters
    ----------
    flux : array_like, (N, C, H, W), float
        Flux images (a memory-mapped array is read chunk by chunk). When ``resample`` is
        given these are the images before it.
    out : ndarray, (N, C, R, R), float16
        Filled in place with model-range values in [-1, 1].
    normalisation : {"asinh", "minmax"}
        The invertible per-band :class:`AsinhStretch` fitted over the dataset, or per-image
        :func:`minmax_normalise` (not flux-preserving).
    resample : callable, optional
        Applied to every chunk ``(n, C, H, W)`` read from ``flux`` before fitting and
        stretching, returning ``(n, C, R, R)`` flux (e.g. crop and
        :func:`galaxy_core.io.units.resample_flux`).
    chunk : int
        Images per step.
    fit_max_values : int
        At most this many pixel values (whole images, evenly spaced over the stack) are used
        to fit the asinh stretch.
    progress : bool or callable
        Progress over the images stretched and stored, one report per chunk
        (:mod:`galaxy_core.progress`; stage "resizing and stretching", or "stretching" without
        ``resample``).

    Returns
    -------
    dict
        ``stretch`` (the description stored in manifests and checkpoints), ``clip_fraction``
        (fraction of values outside [-1, 1] before clipping), ``stretch_fit_images`` (images
        the stretch was fitted on; 0 for minmax).

    Raises
    ------
    galaxy_core.errors.DataError
        An unknown ``normalisation``.
    """
    from galaxy_core.errors import DataError
    from galaxy_core.io.units import model_to_float16

    if normalisation not in ("asinh", "minmax"):
        raise DataError(f"normalisation must be 'asinh' or 'minmax', got {normalisation!r}")
    prepare = resample if resample is not None else (lambda x: np.asarray(x, np.float64))
    n = len(flux)
    stretch, fit_images = None, 0
    if normalisation == "asinh":
        per_image = math.prod(out.shape[1:])
        fit_n = max(1, min(n, fit_max_values // per_image))
        idx = np.unique(np.linspace(0, n - 1, fit_n).round().astype(np.int64))
        stretch = AsinhStretch.fit(prepare(flux[idx]))
        fit_images = int(len(idx))
    clipped = 0
    desc = "resizing and stretching" if resample is not None else "stretching"
    with ProgressBar(progress, total=n, desc=desc, unit="img") as bar:
        for s in range(0, n, chunk):
            x = prepare(flux[s : s + chunk])
            y = stretch.forward(x) if stretch is not None else minmax_normalise(x)  # (n, C, R, R)
            clipped += int(np.count_nonzero(np.abs(y) > 1.0))
            out[s : s + chunk] = model_to_float16(y)
            bar.update(len(y))
    description = stretch.to_dict() if stretch is not None else dict(MINMAX_DESCRIPTION)
    return {"stretch": description, "clip_fraction": clipped / max(out.size, 1),
            "stretch_fit_images": fit_images}
