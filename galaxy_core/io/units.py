"""Units and ranges at the data boundary: the flux convention of resampling, 8-bit <-> model range.

Flux convention: a resize keeps the **total flux**
-----------------------------------------------------
Every physical image the project resamples (FITS folders, the built-in ``sim`` data, generated
images turned back into flux) goes through :func:`resample_flux`, whose output pixels hold
*flux per output pixel*: the flux summed over the image is the same before and after, and a
galaxy's magnitude ``m = ZP - 2.5 log10(sum of its pixels)`` does not depend on the size the
dataset was prepared at. The alternative, keeping the surface brightness (flux per *source*
pixel, what a plain interpolation gives), changes every summed flux by the pixel-area ratio
``(side / size)**2``; magnitudes measured on a generated 64 px image would then depend on the
size of the survey cut-outs it was trained on, which nothing in the image records. Keeping
total flux makes photometry on generated stamps (:mod:`galaxy_core.metrics.photometry`)
read in the units of the source catalogue, with the same zero point; surface brightness
per arcsec^2 is still recovered with the output pixel scale, ``pixel_scale * side / size``,
which the preparation writes into every manifest.

Model range
-----------
8-bit images (0..255) map to the models' [-1, 1] by ``x / 127.5 - 1`` and back by rounding
``(y + 1) * 127.5`` and clipping to 0..255 (:func:`uint8_to_model`, :func:`model_to_uint8`).
Physical data uses the invertible stretches of :mod:`galaxy_core.io.stretch` instead.

Pixel units
-----------
A FITS file's ``BUNIT`` and a model card's ``flux_unit`` are compared by :func:`same_unit`, as
astropy reads them, so ``nanomaggy`` and ``nmgy`` are one unit while ``count`` and
``nanomaggy`` are two.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "FLUX_CONVENTION",
    "model_to_float16",
    "model_to_uint8",
    "pixel_area_ratio",
    "resample_flux",
    "same_unit",
    "uint8_to_model",
]

FLUX_CONVENTION = "total flux kept: pixel values are flux per output pixel"
"""Recorded in every prepared physical dataset's manifest (``preprocess.flux_convention``)."""

_HALF_RANGE = 127.5  # 255 / 2: the 8-bit range is [0, 255], the model range [-1, 1]


# --------------------------------------------------------------------------- flux


def pixel_area_ratio(shape: tuple[int, int], size: int) -> float:
    """Source pixels per output pixel when ``shape = (H, W)`` is resampled to ``(size, size)``.

    The factor :func:`resample_flux` multiplies interpolated values by; ``H W / size**2``.
    """
    h, w = shape
    return float(h) * float(w) / float(size) ** 2


def resample_flux(flux: np.ndarray, size: int) -> np.ndarray:
    """Resample flux images to ``size x size`` pixels keeping the total flux.

    Parameters
    ----------
    flux : ndarray, (..., H, W), float
        Flux per pixel in any linear unit (nanomaggies, counts, ...), sky-subtracted or not.
        Non-square input is stretched; take the centre square first
        (:func:`galaxy_core.data.transforms.centre_crop`).
    size : int
        Output side in pixels, >= 1.

    Returns
    -------
    ndarray, (..., size, size), float64
        Flux per *output* pixel, in the input unit. Sums over the last two axes equal the
        input's to interpolation accuracy: exactly for a constant image, and within about
        0.5 % for a galaxy well inside the image (edge pixels are extrapolated by reflection).

    Notes
    -----
    The surface brightness is interpolated first: bilinearly, after a Gaussian anti-aliasing
    filter of sigma ``(factor - 1) / 2`` source pixels when shrinking
    (:func:`skimage.transform.resize` with ``anti_aliasing``), so each output pixel is a
    local area average and positive flux stays positive (no ringing). The result is then
    multiplied by the pixel-area ratio ``H W / size**2`` (:func:`pixel_area_ratio`), which
    turns flux per source pixel into flux per output pixel. Same size in, a float64 copy out.

    Both steps act on each image axis separately, so the resize is applied as one
    ``(size, H)`` and one ``(size, W)`` matrix taken from scikit-image itself
    (:func:`_axis_operator`): the same numbers as ``resize`` on the whole array (to float64
    rounding), without its N-D interpolation running along the leading axes too (several times
    faster on a stack of stamps).
    """
    x = np.asarray(flux, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"resample_flux expects (..., H, W) images, got shape {x.shape}")
    size = int(size)
    if size < 1:
        raise ValueError(f"output size must be at least 1 pixel, got {size}")
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x.copy()
    shrinking = h > size or w > size
    rows, cols = _axis_operator(h, size, shrinking), _axis_operator(w, size, shrinking)
    stack = x.reshape(-1, h, w)
    along_w = np.einsum("nhw,bw->nhb", stack, cols, optimize=True)  # (N, H, size): one BLAS product each
    out = np.einsum("ah,nhb->nab", rows, along_w, optimize=True)   # (N, size, size)
    return out.reshape(x.shape[:-2] + (size, size)) * pixel_area_ratio((h, w), size)


@functools.lru_cache(maxsize=32)
def _axis_operator(n: int, size: int, anti_aliasing: bool) -> np.ndarray:
    """``(size, n)`` float64, read-only: :func:`skimage.transform.resize` (order 1, ``reflect``
    edges, the Gaussian anti-aliasing filter when the image shrinks) along one axis of ``n``
    pixels, as a matrix: its column ``j`` is the resized unit impulse at pixel ``j``. The
    anti-aliasing sigma of an axis depends only on that axis's own factor, so a resize of a
    whole image is this matrix on the rows times the one for the columns."""
    from skimage.transform import resize

    op = resize(np.eye(n), (size, n), order=1, mode="reflect", anti_aliasing=anti_aliasing, preserve_range=True)
    op.setflags(write=False)
    return op


# --------------------------------------------------------------------------- pixel units


def same_unit(a: str, b: str) -> bool:
    """Whether two unit strings (``BUNIT`` cards, a card's ``flux_unit``) name the same unit.

    Both are read with :mod:`astropy.units`, after a plural is made singular where astropy
    knows only the singular (``counts`` -> ``count``, ``nanomaggies`` -> ``nanomaggy``); units
    equal as astropy compares them (``nanomaggy`` and ``nmgy``) are the same, and units that
    merely convert into each other (``nanomaggy`` and ``uJy``, a factor 3.631) are not, because
    their pixel values differ. Strings astropy cannot read are compared as written, ignoring case
    and surrounding spaces.

    Parameters
    ----------
    a, b : str

    Returns
    -------
    bool
    """
    ua, ub = _read_unit(a), _read_unit(b)
    if ua is not None and ub is not None:
        return ua == ub
    return str(a).strip().lower() == str(b).strip().lower()


def _read_unit(text: str):
    """An astropy unit for ``text`` (trying its singular), or None when astropy cannot read it."""
    import astropy.units as u

    text = str(text).strip()
    singular = text[:-3] + "y" if text.endswith("ies") else text[:-1] if text.endswith("s") else None
    for t in (text, singular):
        if t is None:
            continue
        unit = u.Unit(t, parse_strict="silent")
        if not isinstance(unit, u.UnrecognizedUnit):
            return unit
    return None


# --------------------------------------------------------------------------- ranges


def _is_numpy(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic, int, float))


def uint8_to_model(x):
    """8-bit values 0..255 to the model range [-1, 1]: ``x / 127.5 - 1``.

    Parameters
    ----------
    x : ndarray or torch.Tensor, any shape
        uint8 (or any numeric dtype holding 0..255).

    Returns
    -------
    ndarray or torch.Tensor, float32, same shape
        0 maps to -1, 255 to +1; a tensor stays on its device.
    """
    if _is_numpy(x):
        return np.asarray(x, np.float32) / np.float32(_HALF_RANGE) - np.float32(1.0)
    return x.float() / _HALF_RANGE - 1.0  # torch.Tensor


def model_to_uint8(y):
    """Model range [-1, 1] to 8-bit values, the inverse of :func:`uint8_to_model`.

    Parameters
    ----------
    y : ndarray or torch.Tensor, any shape, float
        Values outside [-1, 1] are clipped.

    Returns
    -------
    ndarray or torch.Tensor, uint8, same shape
        ``round((y + 1) * 127.5)`` clipped to 0..255 (halves round to even); a tensor stays on
        its device. ``model_to_uint8(uint8_to_model(x)) == x`` for every uint8 ``x``.
    """
    if _is_numpy(y):
        v = np.round((np.asarray(y, np.float32) + np.float32(1.0)) * np.float32(_HALF_RANGE))
        return np.clip(v, 0, 255).astype(np.uint8)
    import torch

    return ((y.float() + 1.0) * _HALF_RANGE).round().clamp(0, 255).to(torch.uint8)


def model_to_float16(y: np.ndarray) -> np.ndarray:
    """Model-range values clipped to [-1, 1] and stored as float16 (about 3 significant digits).

    Parameters
    ----------
    y : ndarray, any shape, float

    Returns
    -------
    ndarray, float16, same shape, in [-1, 1]
    """
    return np.clip(y, -1.0, 1.0).astype(np.float16)
