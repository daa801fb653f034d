"""Stretches between physical flux and the model range [-1, 1].

The default is an invertible per-band asinh stretch (Lupton et al. 1999, AJ 118, 1406)::

    u(f) = asinh(f / softening)
    y    = 2 (u(f) - u(lo)) / (u(hi) - u(lo)) - 1

so ``lo`` maps to -1 and ``hi`` to +1. Its parameters are stored in the dataset manifest and in
every checkpoint, so generated images can be turned back into flux (:meth:`AsinhStretch.inverse`)
for photometry and FITS output. Data outside [lo, hi] is clipped when stored for training; the
clipped fraction is recorded.

The per-image min-max normalisation used in the StyleGAN galaxy thesis is offered as
:func:`minmax_normalise`; it is *not* flux-preserving (every image is rescaled on its own) and
is labelled so wherever it is used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


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
