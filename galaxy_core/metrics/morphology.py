"""Per-image galaxy morphology, run over thousands of images, and distribution comparisons.

Three measurement methods, each a function ``image -> dict`` of one table row:

============  ===========================================  ========================================
method        what                                          reference
============  ===========================================  ========================================
``fast``      photutils segmentation + ``SourceCatalog``    Bradley et al., photutils; Abraham et
              moments: centroid, ellipticity, orientation,  al. 2003 / Lotz et al. 2004 (Gini);
              semi-major axis, segment and Kron flux,       Kron 1980; Bershady et al. 2000
              Gini, concentration, half-light radius        (concentration ``5 log10(r80/r20)``)
``isophote``  ``photutils.isophote`` ellipse fitting,       Jedrzejewski 1987; Fussell & Moews
              native pixels (default) or upscaled           2019, MNRAS 485, 3203 (chained GAN
              bicubically to 512 px as in the paper:        galaxies: measured on 512 px
              ellipticity, position angle and half-flux     upscaled images)
              axis, total flux, outermost isophote
``statmorph`` ``statmorph.source_morphology``: Gini, M20,   Rodriguez-Gomez et al. 2019, MNRAS
              C, A, S, Sérsic index, half-light radius,     483, 4140; Lotz et al. 2004;
              with its quality flags                        Conselice 2003
============  ===========================================  ========================================

Every row has ``failed`` (bool), ``reason`` (why it failed, else "") and ``notes`` (every
warning the libraries raised while measuring, so nothing is suppressed silently); a failed
measurement gives NaN values, never a dropped row. :func:`measure_many` runs a method over an
image stack in worker processes and returns an :class:`astropy.table.Table`.

Conventions (all methods)
-------------------------
* Input: a 2-D image ``(H, W)`` or a band stack ``(C, H, W)``, which is summed over bands.
  Values are fluxes (or any linear brightness) with or without a sky level: a background is
  estimated from the image border and subtracted. Model-range images ``[-1, 1]`` should first
  be turned back into flux with the dataset's stretch (:mod:`galaxy_core.io.stretch`).
* Positions are in native pixels, zero-based, pixel centres at integers (photutils).
* Angles are degrees counter-clockwise from the +x axis, wrapped to [-90, 90).
* Lengths are native pixels, fluxes are in the image units summed over pixels.
* The measured source is the segment under the image centre, else the brightest segment.

Comparing sets: :func:`compare_distributions` (two-sample KS and 1-D Wasserstein),
:func:`real_vs_real_floor` (the same statistics between random halves of the real set, the
value a perfect generator would reach at that sample size) and
:func:`synthetic_galaxy_distance` (Smith et al. 2022, MNRAS 511, 1808).
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from astropy.convolution import convolve
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from photutils.segmentation import (
    SegmentationImage,
    SourceCatalog,
    deblend_sources,
    detect_sources,
    make_2dgaussian_kernel,
)
from photutils.utils.exceptions import NoDetectionsWarning
from scipy import stats

from galaxy_core.errors import GalaxyGanError
from galaxy_core.progress import Progress, ProgressBar

__all__ = [
    "COLUMNS",
    "Detection",
    "ISOPHOTE_ATTEMPTS",
    "ISOPHOTE_PROTOCOLS",
    "IsophoteAttempt",
    "IsophoteProtocol",
    "MeasurementError",
    "compare_distributions",
    "detect_central_source",
    "detection_image",
    "estimate_background",
    "flag_summary",
    "measure",
    "measure_fast",
    "measure_isophote",
    "measure_many",
    "measure_statmorph",
    "real_vs_real_floor",
    "synthetic_galaxy_distance",
]


class MeasurementError(GalaxyGanError):
    """A galaxy could not be measured in one image; the message is the row's ``reason``."""


# ------------------------------------------------------------------- input and detection


def detection_image(image) -> np.ndarray:
    """The 2-D image measured: ``(H, W)`` as is, ``(C, H, W)`` summed over bands (float64)."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3:
        x = x.sum(axis=0)
    if x.ndim != 2:
        raise ValueError(f"expected an (H, W) or (C, H, W) image, got shape {np.shape(image)}")
    return x


def _border_pixels(image: np.ndarray, width: int) -> np.ndarray:
    ring = np.ones(image.shape, bool)
    ring[width:-width, width:-width] = False
    return image[ring]


def estimate_background(image, *, border: int | None = None) -> tuple[float, float]:
    """Sky level and noise from the image border (sigma-clipped median and std).

    Parameters
    ----------
    image : array_like, (H, W), float
        Detection image (see :func:`detection_image`).
    border : int, optional
        Width in pixels of the border ring used; default ``max(2, min(H, W) // 8)``. The ring
        keeps small stamps, where a galaxy fills the centre, from biasing the sky level.

    Returns
    -------
    background, noise : float
        Image units. ``noise`` is 0 for a noise-free border.
    """
    img = np.asarray(image, np.float64)
    width = max(2, min(img.shape) // 8) if border is None else int(border)
    pix = _border_pixels(img, width)
    pix = pix[np.isfinite(pix)]
    if pix.size == 0:
        raise MeasurementError("no finite pixels in the image border")
    _, median, std = sigma_clipped_stats(pix, sigma=3.0, maxiters=10)
    return float(median), float(std)


@dataclass(frozen=True)
class Detection:
    """The source chosen in one image and what was learnt finding it.

    Attributes
    ----------
    data : ndarray, (H, W), float64
        Background-subtracted detection image.
    segm : photutils.segmentation.SegmentationImage
        All detected (optionally deblended) segments.
    label : int
        Label of the measured source in ``segm``.
    background, noise : float
        Sky level subtracted and the noise (image units); ``noise`` includes the floor used for
        noise-free images.
    catalog : photutils.segmentation.SourceCatalog
        Catalogue of ``data`` over ``segm`` (all sources; select ``label`` for ours).
    """

    data: np.ndarray
    segm: SegmentationImage
    label: int
    background: float
    noise: float
    catalog: SourceCatalog

    @property
    def source(self):
        """The catalogue row of the measured source (scalar properties)."""
        return self.catalog.select_label(self.label)

    @property
    def others_mask(self) -> np.ndarray:
        """(H, W) bool, True on pixels of *other* detected sources (neighbours, stars)."""
        return (self.segm.data > 0) & (self.segm.data != self.label)


def detect_central_source(
    image,
    *,
    n_sigma: float = 1.5,
    n_pixels: int = 5,
    smooth_fwhm: float = 2.0,
    deblend: bool = False,
    border: int | None = None,
) -> Detection:
    """Find the galaxy in a stamp by photutils image segmentation.

    The background-subtracted image is smoothed with a Gaussian of ``smooth_fwhm`` pixels and
    thresholded at ``n_sigma`` times the (unsmoothed) border noise; connected regions of at
    least ``n_pixels`` are sources, optionally deblended (multi-threshold + watershed). A
    noise-free image gets a noise floor of ``1e-6`` times its peak so that it still segments.

    Parameters
    ----------
    image : array_like, (H, W) or (C, H, W), float
        Flux image; bands are summed.
    n_sigma, n_pixels, smooth_fwhm : float, int, float
        Detection threshold (noise sigmas), minimum segment size (pixels), smoothing (pixels).
    deblend : bool
        Split blended sources (``photutils.segmentation.deblend_sources``).
    border : int, optional
        Border width for :func:`estimate_background`.

    Raises
    ------
    MeasurementError
        No finite data, a constant image, or nothing above the threshold.
    """
    img = detection_image(image)
    if not np.all(np.isfinite(img)):
        raise MeasurementError("image contains NaN or infinite pixels")
    background, noise = estimate_background(img, border=border)
    data = img - background
    peak = float(np.max(np.abs(data)))
    if peak == 0.0:
        raise MeasurementError("image is constant (nothing to measure)")
    noise = max(noise, 1e-6 * peak)
    size = 2 * int(math.ceil(1.5 * smooth_fwhm)) + 1
    smoothed = convolve(data, make_2dgaussian_kernel(smooth_fwhm, size=size))
    with warnings.catch_warnings():
        # photutils warns and returns None when nothing is found: that becomes our error
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segm = detect_sources(smoothed, n_sigma * noise, n_pixels)
    if segm is None:
        raise MeasurementError(f"no source detected above {n_sigma} sigma ({n_pixels} px)")
    if deblend and segm.n_labels >= 1:
        segm = deblend_sources(smoothed, segm, n_pixels, progress_bar=False)
    catalog = SourceCatalog(data, segm)
    label = _central_label(segm, catalog)
    return Detection(data, segm, label, background, noise, catalog)


def _central_label(segm: SegmentationImage, catalog: SourceCatalog) -> int:
    """Label under the image centre, else the label with the largest segment flux."""
    h, w = segm.data.shape
    label = int(segm.data[h // 2, w // 2])
    if label:
        return label
    fluxes = np.asarray(catalog.segment_flux, dtype=np.float64)
    return int(catalog.labels[int(np.nanargmax(fluxes))])


# ------------------------------------------------------------------------ shared helpers


def _value(x) -> float:
    """A float from a number or an astropy Quantity (NaN for masked/None)."""
    if x is None or np.ma.is_masked(x):
        return math.nan
    return float(getattr(x, "value", x))


def _wrap_angle(deg: float) -> float:
    """Axis angle (degrees) wrapped to [-90, 90)."""
    return (deg + 90.0) % 180.0 - 90.0


@contextmanager
def _recorded_warnings() -> Iterator[list[str]]:
    """Collect every warning raised inside as ``"Category: message"`` strings."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield notes
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in notes:
            notes.append(text)


def _empty_row(columns: Sequence[str], reason: str, notes: Sequence[str] = ()) -> dict:
    row = {c: math.nan for c in columns}
    row.update(failed=True, reason=reason, notes="; ".join(notes))
    return row


def _row(values: dict, notes: Sequence[str], *, failed: bool = False, reason: str = "") -> dict:
    return {**values, "failed": failed, "reason": reason, "notes": "; ".join(notes)}


# ------------------------------------------------------------------------ (a) fast path

FAST_COLUMNS = (
    "x_centroid", "y_centroid", "ellipticity", "orientation", "semimajor_axis",
    "semiminor_axis", "segment_flux", "kron_flux", "gini", "concentration", "r_half",
    "n_pixels", "n_sources", "background", "noise",
)  # fmt: skip


def _concentration(src) -> tuple[float, float]:
    """(C = 5 log10(r80 / r20), r50) from photutils flux radii (fractions of the Kron flux)."""
    r20, r50, r80 = (_value(src.flux_radius(f)) for f in (0.2, 0.5, 0.8))
    c = 5.0 * math.log10(r80 / r20) if r20 > 0 and r80 > 0 else math.nan
    return c, r50


def measure_fast(
    image,
    *,
    n_sigma: float = 1.5,
    n_pixels: int = 5,
    smooth_fwhm: float = 2.0,
    deblend: bool = False,
    border: int | None = None,
) -> dict:
    """Segmentation-moment morphology of the central source (photutils ``SourceCatalog``).

    Parameters
    ----------
    image : array_like, (H, W) or (C, H, W), float
        Flux image (see module conventions).
    n_sigma, n_pixels, smooth_fwhm, deblend, border
        Detection options (:func:`detect_central_source`).

    Returns
    -------
    dict
        ``x_centroid, y_centroid`` (px), ``ellipticity`` (1 - b/a from second moments inside
        the segment), ``orientation`` (deg), ``semimajor_axis, semiminor_axis`` (px, the
        moment sigmas, *not* a half-light radius), ``segment_flux`` (flux in the segment),
        ``kron_flux`` (flux in 2.5 Kron radii), ``gini`` (Gini coefficient of the segment
        pixels), ``concentration`` (``5 log10(r80/r20)``, radii enclosing 20 / 80 % of the Kron
        flux), ``r_half`` (px, circular radius enclosing half the Kron flux), ``n_pixels``
        (segment area), ``n_sources`` (segments in the stamp), ``background``, ``noise``,
        plus ``failed``, ``reason``, ``notes``.
    """
    with _recorded_warnings() as notes:
        try:
            det = detect_central_source(
                image, n_sigma=n_sigma, n_pixels=n_pixels, smooth_fwhm=smooth_fwhm,
                deblend=deblend, border=border,
            )  # fmt: skip
        except MeasurementError as e:
            failure = str(e)
        else:
            failure = None
            src = det.source
            conc, r_half = _concentration(src)
            values = {
                "x_centroid": _value(src.x_centroid),
                "y_centroid": _value(src.y_centroid),
                "ellipticity": _value(src.ellipticity),
                "orientation": _wrap_angle(_value(src.orientation)),
                "semimajor_axis": _value(src.semimajor_axis),
                "semiminor_axis": _value(src.semiminor_axis),
                "segment_flux": _value(src.segment_flux),
                "kron_flux": _value(src.kron_flux),
                "gini": _value(src.gini),
                "concentration": conc,
                "r_half": r_half,
                "n_pixels": _value(src.area),
                "n_sources": float(det.segm.n_labels),
                "background": det.background,
                "noise": det.noise,
            }
    if failure is not None:
        return _empty_row(FAST_COLUMNS, failure, notes)
    return _row(values, notes)


# ---------------------------------------------------------------------- (b) isophote path

ISOPHOTE_COLUMNS = (
    "iso_x0", "iso_y0", "iso_ellipticity", "iso_pa", "iso_sma", "iso_sma_half", "iso_flux",
    "iso_n_isophotes", "iso_attempt",
)  # fmt: skip


@dataclass(frozen=True)
class IsophoteProtocol:
    """Where the isophotes of :func:`measure_isophote` are fitted, and on which pixels.

    Attributes
    ----------
    name : str
        Short name (``"native"``, ``"paper512"``), recorded nowhere else than here.
    size : int or None
        Fit on the image upscaled bicubically so its longer side is ``size`` px; None fits the
        native pixels.
    step : float
        Geometric growth of the semi-major axis from one isophote to the next (0.1: each
        isophote 10 % larger).
    inner, outer : float or None
        The ladder runs from ``inner`` to ``outer`` times the segment's moment semi-major axis
        ``a``; ``inner`` None goes in to one native pixel, ``outer`` None out to the stamp
        edge (photutils ``fit_image`` stops earlier where fits fail).
    minit, maxit : int
        Minimum and maximum iterations per isophote (photutils ``fit_isophote``).
    anchor_outer : bool
        Shift the first semi-major axis down (by less than one step) so the geometric ladder
        ends at 95 % of its outer limit instead of anywhere up to one step short of it; with
        a coarse ladder that is the difference between measuring the total flux near the
        stamp edge and missing several per cent of it.
    place_half : bool
        Fit one more isophote at the half-flux semi-major axis and report its shape, rather
        than the shape of the ladder isophote nearest to it.
    exact_flux : bool
        Enclosed fluxes from exact elliptical-aperture overlaps (``photutils.aperture``,
        sub-pixel) instead of sums of the pixels whose centres fall inside each isophote
        (``Isophote.tflux_e``), which are coarse on native pixels.
    """

    name: str
    size: int | None
    step: float
    inner: float | None
    outer: float | None
    minit: int
    maxit: int
    anchor_outer: bool
    place_half: bool
    exact_flux: bool


ISOPHOTE_PROTOCOLS: dict[str, IsophoteProtocol] = {
    # Fussell & Moews 2019: 512 px bicubic upscaling, photutils defaults, a dense ladder.
    "paper512": IsophoteProtocol(name="paper512", size=512, step=0.1, inner=None, outer=None,
                                 minit=10, maxit=50, anchor_outer=False, place_half=False,
                                 exact_flux=False),
    # Native pixels, about six isophotes 40 % apart around the galaxy, one more at the
    # half-flux axis; tens of times faster than paper512 (benchmarks/bench_morphology.py)
    # with the agreement stated in tests/test_morphology_isophote.py.
    "native": IsophoteProtocol(name="native", size=None, step=0.4, inner=0.6, outer=3.5,
                               minit=5, maxit=10, anchor_outer=True, place_half=True,
                               exact_flux=True),
}  # fmt: skip
"""Named protocols for :func:`measure_isophote` (``protocol="native"`` is the default)."""


@dataclass(frozen=True)
class IsophoteAttempt:
    """One way of starting :meth:`photutils.isophote.Ellipse.fit_image`.

    Attributes
    ----------
    sma_factor : float
        First isophote's semi-major axis in units of the segment's moment semi-major axis.
    fix_center : bool
        Hold the centre at the segmentation centroid.
    fflag : float
        Minimum fraction of valid sample points per isophote (photutils default 0.7); lower
        tolerates neighbours and noise.
    maxgerr : float
        Maximum relative error of the radial gradient (photutils default 0.5); higher
        tolerates shallow, noisy outskirts.
    linear : bool
        Grow the semi-major axis linearly by ``step`` native pixels instead of geometrically.
    step : float or None
        With ``linear``, native pixels between isophotes; None uses the protocol's geometric
        step.
    """

    sma_factor: float = 1.5
    fix_center: bool = False
    fflag: float = 0.7
    maxgerr: float = 0.5
    linear: bool = False
    step: float | None = None


ISOPHOTE_ATTEMPTS: tuple[IsophoteAttempt, ...] = (
    IsophoteAttempt(),  # moments start at 1.5 a: good S/N and a clean gradient
    IsophoteAttempt(sma_factor=3.0),  # outer start: peaky or unresolved cores
    IsophoteAttempt(sma_factor=0.8),  # inner start: faint outskirts
    IsophoteAttempt(fix_center=True),  # centre wanders on noise or neighbours
    IsophoteAttempt(fix_center=True, fflag=0.3, maxgerr=1.0),
    IsophoteAttempt(fix_center=True, fflag=0.3, maxgerr=1.0, linear=True, step=1.0),
)
"""Tried in order until one gives a usable fit; the row's ``iso_attempt`` says which."""


def _fill_others(data: np.ndarray, others: np.ndarray, x0: float, y0: float) -> np.ndarray:
    """Replace pixels of other sources by their mirror image through the centroid.

    A galaxy is close to point-symmetric about its centre, so the pixel at ``2 (x0, y0) - p``
    is the best local stand-in for a pixel ``p`` covered by a star or a neighbour; where the
    mirror pixel is outside the stamp or covered too, the sky level 0 is used. The ellipse
    sampler then reads a plain array: photutils samples masked arrays element by element,
    which made masked stamps 10-20 times slower to fit than clean ones.
    """
    if not others.any():
        return data
    out = data.copy()
    yy, xx = np.nonzero(others)
    xm = np.rint(2.0 * x0 - xx).astype(np.int64)
    ym = np.rint(2.0 * y0 - yy).astype(np.int64)
    h, w = data.shape
    inside = (xm >= 0) & (xm < w) & (ym >= 0) & (ym < h)
    usable = inside.copy()
    usable[inside] = ~others[ym[inside], xm[inside]]
    out[yy, xx] = np.where(usable, data[np.clip(ym, 0, h - 1), np.clip(xm, 0, w - 1)], 0.0)
    return out


def _upscale(data: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Bicubic upscaling so the longer side is ``size`` px; returns (data, scale)."""
    from skimage.transform import resize

    scale = size / max(data.shape)
    shape = (round(data.shape[0] * scale), round(data.shape[1] * scale))
    up = resize(data, shape, order=3, mode="edge", anti_aliasing=False, preserve_range=True)
    return up, scale


@dataclass(frozen=True)
class _Start:
    """Initial geometry from the segmentation moments (in the fitted image's pixels)."""

    x0: float
    y0: float
    sma: float  # moment semi-major axis
    eps: float
    pa: float  # radians


def _fit_ladder(image, start: _Start, attempt: IsophoteAttempt, protocol: IsophoteProtocol,
                *, scale: float):
    """Run one ``Ellipse.fit_image``; returns the photutils IsophoteList (may be empty)."""
    from photutils.isophote import Ellipse, EllipseGeometry

    half = 0.5 * min(np.shape(image))
    minsma = scale if protocol.inner is None else max(1.5 * scale, protocol.inner * start.sma)
    maxsma = half if protocol.outer is None else min(half, protocol.outer * start.sma)
    sma0 = min(max(attempt.sma_factor * start.sma, 2.0 * scale, minsma), 0.8 * maxsma)
    step = attempt.step * scale if attempt.linear else protocol.step
    if protocol.anchor_outer and not attempt.linear:
        top = 0.95 * maxsma  # photutils stops growing once the next axis reaches maxsma
        sma0 = max(top / (1.0 + step) ** math.floor(math.log(top / sma0) / math.log1p(step)),
                   minsma)
    geometry = EllipseGeometry(
        x0=start.x0, y0=start.y0, sma=sma0, eps=start.eps, pa=start.pa,
        astep=step, linear_growth=attempt.linear,
    )  # fmt: skip
    return Ellipse(image, geometry=geometry).fit_image(
        sma0=sma0, minsma=minsma, maxsma=maxsma, step=step, minit=protocol.minit,
        maxit=protocol.maxit, fflag=attempt.fflag, maxgerr=attempt.maxgerr,
        linear=attempt.linear, fix_center=attempt.fix_center,
    )  # fmt: skip


def _enclosed_flux(image: np.ndarray, x0, y0, sma, eps, pa) -> float:
    """Flux inside an ellipse by exact pixel overlap (photutils.aperture)."""
    from photutils.aperture import EllipticalAperture

    aperture = EllipticalAperture((x0, y0), a=sma, b=max(sma * (1.0 - eps), 1e-3), theta=pa)
    return float(aperture.do_photometry(image, method="exact")[0][0])


def _summarise_isophotes(isolist, image, start: _Start, protocol: IsophoteProtocol, *,
                         scale: float, min_isophotes: int) -> dict:
    """Row values from a fitted IsophoteList, or raise MeasurementError if it is unusable.

    Usable isophotes have stop code 0 (converged) or 2 (iteration limit). ``iso_flux`` is the
    flux inside the outermost usable isophote; ``iso_sma_half`` the semi-major axis enclosing
    half of it on the curve of growth through the usable isophotes; ellipticity, angle and
    centre are those of the isophote enclosing half of the flux (with ``place_half``, one
    fitted at ``iso_sma_half``).
    """
    if len(isolist) == 0:
        raise MeasurementError("no meaningful ellipse fit")
    sma = np.asarray(isolist.sma, float)
    ok = np.isin(np.asarray(isolist.stop_code), (0, 2)) & (sma > 0)
    ok &= np.isfinite(np.asarray(isolist.tflux_e, float)) & np.isfinite(np.asarray(isolist.eps))
    if ok.sum() < min_isophotes:
        raise MeasurementError(f"only {int(ok.sum())} usable isophotes (< {min_isophotes})")
    order = np.argsort(sma[ok])
    sma = sma[ok][order]
    eps = np.asarray(isolist.eps, float)[ok][order]
    pa = np.asarray(isolist.pa, float)[ok][order]
    x0 = np.asarray(isolist.x0, float)[ok][order]
    y0 = np.asarray(isolist.y0, float)[ok][order]
    if protocol.exact_flux:
        tflux = np.array([_enclosed_flux(image, *g) for g in zip(x0, y0, sma, eps, pa)])
    else:
        tflux = np.asarray(isolist.tflux_e, float)[ok][order]
    total = tflux[-1]
    if not total > 0:
        raise MeasurementError("non-positive flux inside the outermost isophote")
    i = int(np.argmin(np.abs(tflux - total / 2)))
    sma_half = float(np.interp(total / 2, np.maximum.accumulate(tflux), sma))
    shape = (x0[i], y0[i], eps[i], pa[i])
    if protocol.place_half and sma[0] < sma_half < sma[-1]:
        shape = _isophote_at(image, sma_half, shape, protocol) or shape
    drift = math.hypot(shape[0] - start.x0, shape[1] - start.y0)
    if drift > max(2.0 * scale, 0.5 * start.sma):
        raise MeasurementError(f"fit centre drifted {drift / scale:.1f} px from the centroid")
    if shape[2] > 0.95:
        raise MeasurementError(f"ellipticity diverged ({shape[2]:.2f})")
    return {
        "iso_x0": float((shape[0] + 0.5) / scale - 0.5),  # pixel-centre mapping back to native
        "iso_y0": float((shape[1] + 0.5) / scale - 0.5),
        "iso_ellipticity": float(shape[2]),
        "iso_pa": _wrap_angle(math.degrees(shape[3])),
        "iso_sma": float(sma[-1] / scale),
        "iso_sma_half": sma_half / scale,
        "iso_flux": float(total / scale**2),  # bicubic keeps surface brightness per pixel
        "iso_n_isophotes": float(len(sma)),
    }


def _isophote_at(image, sma: float, shape, protocol: IsophoteProtocol):
    """(x0, y0, eps, pa) of one isophote fitted at ``sma`` from ``shape``; None if it fails."""
    from photutils.isophote import Ellipse, EllipseGeometry

    x0, y0, eps, pa = shape
    geometry = EllipseGeometry(x0=x0, y0=y0, sma=sma, eps=eps, pa=pa, astep=protocol.step)
    iso = Ellipse(image, geometry=geometry).fit_isophote(
        sma, step=protocol.step, minit=protocol.minit, maxit=protocol.maxit
    )
    if iso.stop_code not in (0, 2) or not np.isfinite(iso.eps):
        return None
    return (iso.x0, iso.y0, iso.eps, iso.pa)


def measure_isophote(
    image,
    *,
    protocol: str | IsophoteProtocol = "native",
    attempts: Sequence[IsophoteAttempt] = ISOPHOTE_ATTEMPTS,
    min_isophotes: int = 3,
    n_sigma: float = 1.5,
    n_pixels: int = 5,
    smooth_fwhm: float = 2.0,
    deblend: bool = False,
    border: int | None = None,
) -> dict:
    """Isophote (ellipse-fit) morphology with ``photutils.isophote`` (Jedrzejewski 1987).

    Each fit starts from the segmentation moments of the source (centre, size, ellipticity,
    angle) and lays a ladder of isophotes with :meth:`photutils.isophote.Ellipse.fit_image`;
    when a start gives no usable isophotes, raises inside photutils, or drifts off the source,
    the next of ``attempts`` is tried (other first semi-major axis, fixed centre, tolerant
    flagging, linear growth). Pixels of other detected sources are replaced by their mirror
    image through the centroid. A fit that fails every attempt gives a NaN row whose
    ``reason`` lists each attempt's failure.

    Two protocols (:data:`ISOPHOTE_PROTOCOLS`):

    * ``"native"`` (default): native pixels, isophotes from 0.6 to 3.5 moment semi-major axes
      (at most to the stamp edge) 40 % apart, 5 to 10 iterations each, exact
      elliptical-aperture fluxes, and one more isophote fitted at the half-flux semi-major
      axis whose shape is reported.
    * ``"paper512"``: the protocol of Fussell & Moews 2019 (MNRAS 485, 3203), who measured
      chained-GAN galaxies on images upscaled bicubically to 512 px: photutils defaults,
      isophotes 10 % apart from one native pixel out to the stamp edge. Each 64 px stamp
      takes seconds; use it to reproduce the paper.

    On 64 px ``sim`` stamps the two agree on ellipticity, position angle and half-flux size
    within the tolerances stated in ``tests/test_morphology_isophote.py``.

    Parameters
    ----------
    image : array_like, (H, W) or (C, H, W), float
        Flux image (see module conventions).
    protocol : str or IsophoteProtocol
        ``"native"``, ``"paper512"`` or a custom :class:`IsophoteProtocol`.
    attempts : sequence of IsophoteAttempt
        Starts tried in order (default :data:`ISOPHOTE_ATTEMPTS`).
    min_isophotes : int
        Fewer usable isophotes than this is a failure.
    n_sigma, n_pixels, smooth_fwhm, deblend, border
        Detection options (:func:`detect_central_source`).

    Returns
    -------
    dict
        ``iso_x0, iso_y0`` (native px) and ``iso_ellipticity``, ``iso_pa`` (deg) of the
        half-flux isophote, ``iso_sma`` (native px, outermost usable isophote),
        ``iso_sma_half`` (native px, semi-major axis enclosing half of ``iso_flux``),
        ``iso_flux`` (flux inside the outermost usable isophote, image units),
        ``iso_n_isophotes``, ``iso_attempt`` (index into ``attempts``), plus ``failed``,
        ``reason``, ``notes``.

    Raises
    ------
    ValueError
        An unknown protocol name.
    """
    if isinstance(protocol, str):
        if protocol not in ISOPHOTE_PROTOCOLS:
            raise ValueError(f"unknown isophote protocol {protocol!r}; use one of "
                             f"{sorted(ISOPHOTE_PROTOCOLS)} or an IsophoteProtocol")
        protocol = ISOPHOTE_PROTOCOLS[protocol]
    with _recorded_warnings() as notes:
        try:
            det = detect_central_source(
                image, n_sigma=n_sigma, n_pixels=n_pixels, smooth_fwhm=smooth_fwhm,
                deblend=deblend, border=border,
            )  # fmt: skip
        except MeasurementError as e:
            failure, values = str(e), None
        else:
            failure, values = _fit_with_retries(
                det, protocol=protocol, attempts=attempts, min_isophotes=min_isophotes
            )
    if values is None:
        return _empty_row(ISOPHOTE_COLUMNS, failure, notes)
    return _row(values, notes)


def _fit_with_retries(det: Detection, *, protocol, attempts, min_isophotes):
    """(None, values) from the first usable attempt, or (reason, None)."""
    src = det.source
    x0, y0 = _value(src.x_centroid), _value(src.y_centroid)
    data, scale = _fill_others(det.data, det.others_mask, x0, y0), 1.0
    if protocol.size is not None:
        data, scale = _upscale(data, protocol.size)
    start = _Start(
        x0=(x0 + 0.5) * scale - 0.5,
        y0=(y0 + 0.5) * scale - 0.5,
        sma=max(_value(src.semimajor_axis), 1.0) * scale,
        eps=min(max(_value(src.ellipticity), 0.05), 0.9),  # eps = 0 leaves the angle undefined
        pa=math.radians(_value(src.orientation)) % math.pi,
    )
    reasons = []
    for k, attempt in enumerate(attempts):
        try:
            isolist = _fit_ladder(data, start, attempt, protocol, scale=scale)
            values = _summarise_isophotes(isolist, data, start, protocol, scale=scale,
                                          min_isophotes=min_isophotes)
        except MeasurementError as e:
            reasons.append(f"#{k}: {e}")
        except (ValueError, FloatingPointError, ZeroDivisionError, np.linalg.LinAlgError) as e:
            # photutils raises these when an ellipse diverges (NaN/inf geometry)
            reasons.append(f"#{k}: fit diverged ({type(e).__name__}: {e})")
        else:
            values["iso_attempt"] = float(k)
            return None, values
    return "isophote fit failed: " + "; ".join(reasons), None


# ---------------------------------------------------------------------- (c) statmorph path

STATMORPH_COLUMNS = (
    "sm_gini", "sm_m20", "sm_concentration", "sm_asymmetry", "sm_smoothness", "sm_sersic_n",
    "sm_sersic_rhalf", "sm_rhalf_ellip", "sm_rhalf_circ", "sm_ellipticity", "sm_orientation",
    "sm_sn_per_pixel", "sm_flag", "sm_flag_sersic",
)  # fmt: skip

_STATMORPH_ATTRS = {
    "sm_gini": "gini", "sm_m20": "m20", "sm_concentration": "concentration",
    "sm_asymmetry": "asymmetry", "sm_smoothness": "smoothness", "sm_sersic_n": "sersic_n",
    "sm_sersic_rhalf": "sersic_rhalf", "sm_rhalf_ellip": "rhalf_ellip",
    "sm_rhalf_circ": "rhalf_circ", "sm_ellipticity": "ellipticity_asymmetry",
    "sm_orientation": "orientation_asymmetry", "sm_sn_per_pixel": "sn_per_pixel",
}  # fmt: skip

_STATMORPH_BAD = -99.0  # statmorph's value for a quantity it could not compute


def measure_statmorph(
    image,
    *,
    gain: float | None = None,
    psf: np.ndarray | None = None,
    bad_flag: int = 2,
    n_sigma: float = 1.5,
    n_pixels: int = 5,
    smooth_fwhm: float = 2.0,
    deblend: bool = False,
    border: int | None = None,
) -> dict:
    """Non-parametric and Sérsic morphology with statmorph (Rodriguez-Gomez et al. 2019).

    Runs :func:`statmorph.source_morphology` on the background-subtracted image with the
    segment of the central source (other sources masked) and a weight map equal to the border
    noise (or, given ``gain``, statmorph's own Poisson + sky weights).

    Parameters
    ----------
    image : array_like, (H, W) or (C, H, W), float
        Flux image (see module conventions).
    gain : float, optional
        Electrons per image unit; without it the weight map is the constant border noise.
    psf : ndarray, optional
        PSF image for the Sérsic fit (statmorph convolves its model with it).
    bad_flag : int
        Rows with statmorph ``flag >= bad_flag`` are marked ``failed`` (their values are kept
        for inspection). statmorph flags: 0 good, 1 suspect, 2 bad, 4 catastrophic.
    n_sigma, n_pixels, smooth_fwhm, deblend, border
        Detection options (:func:`detect_central_source`).

    Returns
    -------
    dict
        ``sm_gini``, ``sm_m20`` (Lotz et al. 2004), ``sm_concentration``, ``sm_asymmetry``,
        ``sm_smoothness`` (Conselice 2003), ``sm_sersic_n``, ``sm_sersic_rhalf`` (px, along the
        major axis), ``sm_rhalf_ellip`` / ``sm_rhalf_circ`` (px, non-parametric half-light
        radius, elliptical / circular apertures), ``sm_ellipticity``, ``sm_orientation`` (deg),
        ``sm_sn_per_pixel``, ``sm_flag``, ``sm_flag_sersic``, plus ``failed``, ``reason``,
        ``notes``. Values statmorph reports as -99 become NaN and are named in ``notes``.
    """
    import statmorph

    with _recorded_warnings() as notes:
        try:
            det = detect_central_source(
                image, n_sigma=n_sigma, n_pixels=n_pixels, smooth_fwhm=smooth_fwhm,
                deblend=deblend, border=border,
            )  # fmt: skip
        except MeasurementError as e:
            failure, morph = str(e), None
        else:
            failure = None
            segmap = (det.segm.data == det.label).astype(np.int32)
            weights = None if gain is not None else np.full(det.data.shape, det.noise)
            morph = statmorph.source_morphology(
                det.data, segmap, mask=det.others_mask if det.others_mask.any() else None,
                weightmap=weights, gain=gain, psf=psf,
            )[0]  # fmt: skip
    if morph is None:
        return _empty_row(STATMORPH_COLUMNS, failure, notes)
    values = {}
    for column, attr in _STATMORPH_ATTRS.items():
        v = _value(getattr(morph, attr))
        if v == _STATMORPH_BAD:
            notes.append(f"statmorph returned -99 for {attr}")
            v = math.nan
        values[column] = v
    values["sm_orientation"] = _wrap_angle(math.degrees(values["sm_orientation"]))
    values["sm_flag"] = float(morph.flag)
    values["sm_flag_sersic"] = float(morph.flag_sersic)
    if morph.flag >= bad_flag:
        reason = f"statmorph flag {morph.flag} (>= {bad_flag})"
        return _row(values, notes, failed=True, reason=reason)
    return _row(values, notes)


def flag_summary(table: Table, *, min_sn: float = 2.5) -> dict:
    """Counts of statmorph quality flags in a :func:`measure_many` table (method statmorph).

    Returns
    -------
    dict
        ``n``, ``failed`` (rows marked failed, any reason), ``no_source`` (segmentation found
        nothing), ``flag_0``, ``flag_1``, ``flag_2``, ``flag_4`` (statmorph ``flag`` values),
        ``flag_sersic`` (rows with a non-zero Sérsic-fit flag), ``low_sn`` (S/N per pixel
        below ``min_sn``; Lotz et al. 2004 recommend > 2.5 for reliable Gini/M20).
    """
    flag = np.asarray(table["sm_flag"], float)
    sn = np.asarray(table["sm_sn_per_pixel"], float)
    out = {
        "n": len(table),
        "failed": int(np.sum(table["failed"])),
        "no_source": int(np.sum(np.isnan(flag))),
    }
    for f in (0, 1, 2, 4):
        out[f"flag_{f}"] = int(np.sum(flag == f))
    out["flag_sersic"] = int(np.sum(np.nan_to_num(np.asarray(table["sm_flag_sersic"], float)) > 0))
    out["low_sn"] = int(np.sum(sn < min_sn))
    return out


# -------------------------------------------------------------------------- (d) batches

METHODS: dict[str, tuple[Callable[..., dict], tuple[str, ...]]] = {
    "fast": (measure_fast, FAST_COLUMNS),
    "isophote": (measure_isophote, ISOPHOTE_COLUMNS),
    "statmorph": (measure_statmorph, STATMORPH_COLUMNS),
}
COLUMNS = {name: cols + ("failed", "reason", "notes") for name, (_, cols) in METHODS.items()}
"""Row keys of each method, in table order (after ``index``)."""


def _method(method: str) -> tuple[Callable[..., dict], tuple[str, ...]]:
    if method not in METHODS:
        raise ValueError(f"unknown morphology method {method!r}; use one of {sorted(METHODS)}")
    return METHODS[method]


def measure(image, *, method: str = "fast", **options) -> dict:
    """Measure one image with ``method`` (``"fast"``, ``"isophote"`` or ``"statmorph"``).

    Any unexpected exception inside the measurement is turned into a failed row whose
    ``reason`` names it, so one bad image never stops a batch. ``options`` go to the method's
    function.
    """
    func, columns = _method(method)
    try:
        return func(image, **options)
    except Exception as e:  # recorded in the row, never dropped
        return _empty_row(columns, f"error: {type(e).__name__}: {e}")


def _measure_chunk(method: str, images: np.ndarray, options: dict) -> list[dict]:
    """Worker-process entry point: one row per image of a chunk."""
    return [measure(img, method=method, **options) for img in images]


def _validate_options(method: str, options: dict) -> None:
    """Fail before starting workers on a misspelt option."""
    func, _ = _method(method)
    try:
        inspect.signature(func).bind(None, **options)
    except TypeError as e:
        raise TypeError(f"morphology method {method!r}: {e}") from None


def measure_many(
    images,
    *,
    method: str = "fast",
    workers: int | None = None,
    progress: Progress = True,
    chunk_size: int | None = None,
    **options,
) -> Table:
    """Measure a stack of images in parallel worker processes; one table row per image.

    Parameters
    ----------
    images : array_like, (N, H, W) or (N, C, H, W), float
        Flux images (a memory-mapped array is read chunk by chunk).
    method : {"fast", "isophote", "statmorph"}
        Measurement (see :func:`measure_fast`, :func:`measure_isophote`,
        :func:`measure_statmorph`).
    workers : int, optional
        Worker processes ('spawn' context, safe with threads and torch). Default: the CPU
        count. 0 or 1 measures in this process. Scripts using workers need the usual
        ``if __name__ == "__main__":`` guard.
    progress : bool or callable
        True shows a tqdm bar; a callable is called as ``progress(done, total)`` after each
        chunk (for a UI); False is silent.
    chunk_size : int, optional
        Images per task; default about four tasks per worker, at most 64 images.
    **options
        Passed to the method's function (checked before any work starts).

    Returns
    -------
    astropy.table.Table
        Columns ``index`` then :data:`COLUMNS` ``[method]``; ``failed``/``reason`` say which
        rows have no measurement and why.
    """
    func, columns = _method(method)
    _validate_options(method, options)
    n = len(images)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if chunk_size is None:
        chunk_size = max(1, min(64, math.ceil(n / (4 * max(workers, 1)))))
    starts = range(0, n, chunk_size)
    rows: list[dict | None] = [None] * n
    bar = ProgressBar(progress, total=n, desc=f"measuring morphology ({method})", unit="img")
    update, close = bar.update, bar.close
    try:
        if workers <= 1 or n <= chunk_size:
            for s in starts:
                chunk = np.asarray(images[s : s + chunk_size])
                rows[s : s + len(chunk)] = _measure_chunk(method, chunk, options)
                update(len(chunk))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {
                    pool.submit(_measure_chunk, method, np.asarray(images[s : s + chunk_size]),
                                options): s
                    for s in starts
                }  # fmt: skip
                for fut in as_completed(futures):
                    s = futures[fut]
                    result = fut.result()
                    rows[s : s + len(result)] = result
                    update(len(result))
    finally:
        close()
    names = ("index",) + COLUMNS[method]
    data = [[i] + [row[c] for c in COLUMNS[method]] for i, row in enumerate(rows)]
    dtypes = [np.int64] + [float] * len(columns) + [bool, str, str]
    if not data:
        return Table(names=names, dtype=dtypes)
    return Table(rows=data, names=names, dtype=dtypes)


# ---------------------------------------------------------------------- (e) comparisons


def _finite(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size < 2:
        raise ValueError(f"{name}: need at least 2 finite values, got {v.size}")
    return v


def compare_distributions(real_values, fake_values) -> dict:
    """Two-sample comparison of one measured quantity (NaNs, i.e. failed rows, dropped).

    Parameters
    ----------
    real_values, fake_values : array_like, 1-D, float
        The quantity for the real and the generated set (any units, the same for both).

    Returns
    -------
    dict
        ``ks`` (Kolmogorov-Smirnov statistic, 0..1), ``ks_p`` (its p-value),
        ``wasserstein`` (1-D earth mover's distance, in the quantity's units), ``n_real``,
        ``n_fake`` (finite values used).
    """
    r = _finite(real_values, "real_values")
    f = _finite(fake_values, "fake_values")
    ks = stats.ks_2samp(r, f)
    return {
        "ks": float(ks.statistic),
        "ks_p": float(ks.pvalue),
        "wasserstein": float(stats.wasserstein_distance(r, f)),
        "n_real": int(r.size),
        "n_fake": int(f.size),
    }


def real_vs_real_floor(values, *, rng=None, repeats: int = 20) -> dict:
    """:func:`compare_distributions` between random halves of the real set: the floor.

    A generator as good as the data itself reaches about these values at half the real
    sample size; a fake-vs-real value should be read against it, not against zero.

    Parameters
    ----------
    values : array_like, 1-D, float
        The quantity for the real set (NaNs dropped).
    rng : numpy.random.Generator, int or None
        Randomness of the splits; None means seed 0.
    repeats : int
        Random splits averaged.

    Returns
    -------
    dict
        Mean ``ks``, ``ks_p``, ``wasserstein`` over the splits, their standard deviations
        ``ks_std``, ``wasserstein_std``, and ``n_half``.
    """
    v = _finite(values, "values")
    if v.size < 4:
        raise ValueError(f"need at least 4 finite values to split in halves, got {v.size}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng or 0)
    half = v.size // 2
    results = []
    for _ in range(repeats):
        perm = gen.permutation(v.size)
        results.append(compare_distributions(v[perm[:half]], v[perm[half : 2 * half]]))
    ks = np.array([r["ks"] for r in results])
    wd = np.array([r["wasserstein"] for r in results])
    return {
        "ks": float(ks.mean()),
        "ks_p": float(np.mean([r["ks_p"] for r in results])),
        "wasserstein": float(wd.mean()),
        "ks_std": float(ks.std()),
        "wasserstein_std": float(wd.std()),
        "n_half": int(half),
    }


def synthetic_galaxy_distance(
    real_table, fake_table, columns: Sequence[str], *, standardise: bool = True
) -> dict:
    """Synthetic Galaxy Distance: summed 1-D Wasserstein distances (Smith et al. 2022).

    Smith et al. 2022 (MNRAS 511, 1808) compare the emergent physical properties of a
    generated and a real set, e.g. magnitude per band, colours and half-light radius, by
    the sum over properties of the 1-D Wasserstein distance between their distributions.

    Choice made here: with ``standardise=True`` (default) each column's distance is divided
    by the standard deviation of the *real* values of that column, so that properties in
    different units (mag, px) contribute on one scale and the total is unitless, and a
    column's contribution reads as "shift in units of the real spread". ``standardise=False``
    gives the plain sum in mixed units. Only values of one convention should be compared.

    A real column whose finite values are all equal has no spread to divide by. Its term is
    then the plain Wasserstein distance in the column's own units (0 when the generated
    values sit on the same constant, the mean absolute offset from it otherwise), so that a
    generated set that varies where the real one does not is still penalised, and the column
    is listed under ``unstandardised`` in the result.

    Parameters
    ----------
    real_table, fake_table : astropy.table.Table or mapping of column -> 1-D array
        Measured properties (NaNs, e.g. failed rows, dropped per column).
    columns : sequence of str
        Columns summed over.
    standardise : bool
        Scale each distance by the real column's standard deviation (ddof = 1).

    Returns
    -------
    dict
        ``sgd`` (the sum), ``per_column`` (column -> its term) and ``unstandardised`` (the
        columns, in order, left in their own units because their real values are constant;
        always empty with ``standardise=False``).

    Raises
    ------
    ValueError
        No columns, or a column with fewer than 2 finite values in either table.
    """
    if not columns:
        raise ValueError("no columns given for the synthetic galaxy distance")
    per_column, unstandardised = {}, []
    for col in columns:
        r = _finite(real_table[col], f"real {col}")
        f = _finite(fake_table[col], f"fake {col}")
        d = float(stats.wasserstein_distance(r, f))
        if standardise:
            # np.ptp, not the std: the std of identical floats can round to ~1e-16, not 0
            if np.ptp(r) == 0:
                unstandardised.append(col)
            else:
                d /= float(np.std(r, ddof=1))
        per_column[col] = d
    return {"sgd": float(sum(per_column.values())), "per_column": per_column,
            "unstandardised": unstandardised}
