"""Compose sparse skies: galaxies added onto a noisy background where a grid says.

Stage two of the two-stage sparse-sky model (ETH Zurich, "Generative models for sparse
cosmological images"): a position source gives a G x G grid of cell classes per sky tile of
``G * cell_px`` pixels, and a galaxy source draws one galaxy per occupied cell, placed at the
cell centre plus sub-cell jitter. The sky is built tile by tile (so any size can be composed;
only the output array is held) and is deterministic for a seed: every tile has its own
random streams, from :class:`numpy.random.SeedSequence` ``(seed, tile)``.

Flux convention: images are in the ``hdf`` field's units, each band of the 8-bit composite
scaled to [0, 1] (not calibrated). A galaxy's flux image is its patch minus the patch's
border level, kept inside a segmentation mask (:func:`galaxy_flux`); it is ADDED to the sky,
never written over it, so ``sky.sum() == background.sum() + truth["flux"].sum()`` exactly
(up to float rounding), with the flux that fell outside the sky left out of the truth table.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from galaxy_core.sky.grids import GridOptions, grid_to_catalogue, sample_cells

BANDS = ("R", "G", "B")


# --------------------------------------------------------------------------- background


@dataclass(frozen=True, eq=False)
class Background:
    """Sky level and noise of each band (field units, see module docstring).

    White noise (``kernels`` None): independent Gaussian noise of standard deviation
    ``sigma`` per band and pixel. Correlated noise (``kernels`` given, see
    :func:`measure_background`): ``colour @ (kernels * white)``, i.e. three independent
    unit-variance white fields, each convolved with its own kernel, mixed into R, G, B by the
    ``colour`` matrix, so the noise has the measured cross-band covariance and the measured
    spatial power spectrum of each colour component.

    Attributes
    ----------
    level, sigma : tuple of 3 float
        Mean sky level and noise standard deviation of R, G, B.
    colour : ndarray (3, 3), optional
        Columns = the band vectors of the colour components (eigenvectors of the band
        covariance of the source-free sky).
    kernels : ndarray (3, K, K), optional
        Convolution kernel of each colour component, K odd.
    quantiles : ndarray (3, Q), optional
        With ``kernels``: quantiles of each band's source-free sky at probabilities
        ``linspace(0, 1, Q)``; the Gaussian noise of each band is mapped through its normal
        CDF onto them, so the pixel histogram is the data's (its skew and its lower cut-off at
        the 8-bit zero included), not a Gaussian.
    modulation : SkyModulation, optional
        How the sky level and the noise amplitude vary across the sky (:class:`SkyModulation`);
        applied by :meth:`draw` only where it is given the modulation ``fields``.
    """

    level: tuple[float, float, float]
    sigma: tuple[float, float, float]
    colour: np.ndarray | None = None
    kernels: np.ndarray | None = None
    quantiles: np.ndarray | None = None
    modulation: "SkyModulation | None" = None

    def draw(self, shape: tuple[int, int], rng: np.random.Generator, fields: np.ndarray | None = None) -> np.ndarray:
        """(3, h, w) float32 background: level plus (white or correlated) Gaussian noise.

        ``fields``: (2, h, w) unit-variance fields of this patch of the sky
        (:meth:`SkyModulation.coarse` then :meth:`SkyModulation.at`); with them and a
        ``modulation`` the patch's noise is scaled by ``exp(noise_sd * fields[0])`` and
        ``level_sd * fields[1]`` is added to its level (every band alike). Without them the
        sky level and the noise amplitude are the same everywhere."""
        out = self._draw(shape, rng)
        if fields is None or self.modulation is None:
            return out
        m = self.modulation
        lev = np.asarray(self.level, np.float32)[:, None, None]
        gain = np.exp(np.float32(m.noise_sd) * fields[0]).astype(np.float32)
        return (lev + (out - lev) * gain[None] + np.float32(m.level_sd) * fields[1][None]).astype(np.float32)

    def _draw(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        lev = np.asarray(self.level, np.float32)[:, None, None]
        if self.kernels is None:
            sig = np.asarray(self.sigma, np.float32)[:, None, None]
            return (lev + sig * rng.standard_normal((3,) + tuple(shape), dtype=np.float32)).astype(np.float32)
        from scipy.signal import fftconvolve

        h, w = shape
        k = self.kernels.shape[-1]
        white = rng.standard_normal((3, h + k - 1, w + k - 1), dtype=np.float32)
        comps = np.stack([fftconvolve(white[c], self.kernels[c], mode="valid") for c in range(3)])
        noise = np.tensordot(np.asarray(self.colour, np.float32), comps.astype(np.float32), axes=(1, 0))
        if self.quantiles is None:
            return (lev + noise).astype(np.float32)
        from scipy.special import ndtr

        probs = np.linspace(0.0, 1.0, self.quantiles.shape[1])
        out = np.empty_like(noise)
        for b in range(3):
            out[b] = np.interp(ndtr(noise[b] / self.sigma[b]), probs, self.quantiles[b])
        return out.astype(np.float32)


def block_mean_sd(block: int, scale: float) -> float:
    """Standard deviation of the mean over a ``block`` x ``block`` px square of a unit-variance
    field made by Gaussian smoothing (kernel sigma ``scale`` px) of white noise, whose
    correlation at distance d is ``exp(-d² / (4 scale²))``. 1 for ``block`` = 1; falls as the
    block grows past the scale."""
    d = np.arange(block)
    c = np.exp(-((d[:, None] - d[None, :]) ** 2) / (4.0 * scale**2))
    return float(c.mean())  # (1-D mean of the correlations)² is the 2-D variance; its root is this


@dataclass(frozen=True)
class SkyModulation:
    """Slow variation of the sky level and of the noise amplitude across a sky.

    The deep field is a drizzled mosaic: its depth, hence its noise, and its sky level change
    from place to place on scales of about a hundred pixels (:func:`measure_modulation`). Two
    Gaussian random fields of unit variance, smoothed with a Gaussian of sigma ``scale`` px and
    correlated with coefficient ``rho``, give at each pixel the noise gain
    ``exp(noise_sd * g_n)`` and the level offset ``level_sd * g_l``
    (:meth:`Background.draw`). They are drawn once per sky on a grid of ``step`` px
    (:meth:`coarse`) and interpolated bilinearly to each patch (:meth:`at`), so a sky composed
    tile by tile has no seams and is a pure function of its seed.

    Attributes
    ----------
    level_sd : float
        Standard deviation of the level offset at a pixel, field units (8-bit value / 255).
    noise_sd : float
        Standard deviation of the natural log of the noise gain at a pixel.
    rho : float
        Correlation of the two fields, in [-1, 1] (on the deep field a deeper, quieter place also
        has a lower level).
    scale : float
        Sigma of the smoothing Gaussian, px (correlation ``exp(-d² / (4 scale²))`` at d px).
    step : int
        Grid spacing of :meth:`coarse`, px.
    """

    level_sd: float
    noise_sd: float
    rho: float
    scale: float
    step: int = 8

    def coarse(self, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """(2, height // step + 2, width // step + 2) float32 unit-variance fields (noise, level)
        on grid nodes ``step`` px apart, node (0, 0) at pixel (0, 0)."""
        from scipy.ndimage import gaussian_filter, gaussian_filter1d

        sigma = self.scale / self.step
        pad = 2 * int(4.0 * sigma + 0.5) + 1  # the filter's width (scipy's default truncation, 4 sigma)
        taps = gaussian_filter1d(np.eye(1, pad, pad // 2)[0], sigma, mode="constant")  # its impulse response
        hc, wc = height // self.step + 2, width // self.step + 2
        white = rng.standard_normal((2, hc + 2 * pad, wc + 2 * pad))
        g = gaussian_filter(white, (0, sigma, sigma), mode="constant")
        g = g[:, pad : pad + hc, pad : pad + wc] / np.sum(taps**2)  # sd after both axes = sum of taps²
        rho = float(np.clip(self.rho, -1.0, 1.0))
        return np.stack([g[0], rho * g[0] + np.sqrt(1.0 - rho**2) * g[1]]).astype(np.float32)

    def at(self, coarse: np.ndarray, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """(2, h, w) float32 fields of the patch whose top-left pixel is (y0, x0), bilinear
        between the nodes of :meth:`coarse`."""
        def axis(start: int, n: int, size: int):
            u = (start + np.arange(n)) / self.step
            i = np.minimum(np.floor(u).astype(np.int64), size - 2)
            return i, (u - i).astype(np.float32)

        iy, fy = axis(y0, h, coarse.shape[1])
        ix, fx = axis(x0, w, coarse.shape[2])
        rows = coarse[:, iy] * (1 - fy)[None, :, None] + coarse[:, iy + 1] * fy[None, :, None]
        return (rows[:, :, ix] * (1 - fx) + rows[:, :, ix + 1] * fx).astype(np.float32)


def _block_stats(lum: np.ndarray, free: np.ndarray, block: int, min_free: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Per ``block`` px square of a (H, W) image: the mean of its free pixels and the log of the
    standard deviation of its 5-point high-pass ``x - mean of the 4 neighbours`` over the free
    pixels whose neighbours are free too; squares with under ``min_free`` of them are left out."""
    hp = lum[1:-1, 1:-1] - 0.25 * (lum[:-2, 1:-1] + lum[2:, 1:-1] + lum[1:-1, :-2] + lum[1:-1, 2:])
    ok = free[1:-1, 1:-1] & free[:-2, 1:-1] & free[2:, 1:-1] & free[1:-1, :-2] & free[1:-1, 2:]
    inner = lum[1:-1, 1:-1]
    levels, rms = [], []
    for y in range(0, hp.shape[0] - block + 1, block):
        for x in range(0, hp.shape[1] - block + 1, block):
            m = ok[y : y + block, x : x + block]
            if m.mean() >= min_free:
                levels.append(inner[y : y + block, x : x + block][m].mean())
                rms.append(np.log(hp[y : y + block, x : x + block][m].std()))
    return np.array(levels), np.array(rms)


def measure_modulation(rgb01: np.ndarray, mask: np.ndarray, background: Background, *,
                       blocks: tuple[int, int] = (48, 120), draws: int = 2) -> SkyModulation:
    """How the sky level and the noise amplitude of an image vary from place to place.

    The band mean's free pixels (``mask`` False) are cut into squares of ``blocks[0]`` and of
    ``blocks[1]`` px; in each square the mean (level) and the log standard deviation of the
    5-point high-pass (noise amplitude) are taken. Part of their spread is the estimate's own
    scatter: the same is measured on ``draws`` drawings of ``background`` (which has neither
    variation) seen through the same mask, and its variance and covariance are subtracted.
    The ratio of the remaining spreads at the two block sizes gives the fields' correlation
    scale (:func:`block_mean_sd`), from which the spreads at one pixel follow.

    Parameters
    ----------
    rgb01 : array (H, W, 3), float in [0, 1]
        The image, field units.
    mask : array (H, W), bool
        True on sources (:func:`source_mask`); those pixels are left out.
    background : Background
        The image's background model without variation (:func:`measure_background`): its
        drawings give the estimates' own scatter.
    blocks : (int, int)
        The two square sizes, px, increasing.
    draws : int
        Drawings of ``background`` averaged for the scatter (fixed seed: deterministic).

    Returns
    -------
    SkyModulation
        On the deep field (334 squares of 48 px, 56 of 120 px): block spreads of the level 0.35 /
        0.26 of an 8-bit level and of the noise 4.3 / 3.4 % once the estimate's own scatter
        (0.28 / 0.12 levels, 2.3 / 1.0 %) is taken off, correlation 0.48 (at 48 px); hence scale
        36 px and, at a pixel, level_sd 0.0015 (0.38 of a level) and noise_sd 0.046.

    Raises
    ------
    ValueError
        If the blocks are not two increasing sizes of at least 8 px, or too few squares are free
        to measure.
    """
    b1, b2 = blocks
    if not 8 <= b1 < b2:
        raise ValueError(f"measure_modulation: blocks must be two increasing sizes >= 8 px, got {blocks}")
    x = np.asarray(rgb01, np.float64)
    free = ~np.asarray(mask, bool)
    lum = x.mean(axis=-1)
    rng = np.random.default_rng(12345)
    fakes = [background.draw(lum.shape, rng).astype(np.float64).mean(axis=0) for _ in range(draws)]

    def true_cov(block):
        lev, rms = _block_stats(lum, free, block)
        if len(lev) < 8:
            raise ValueError(f"measure_modulation: only {len(lev)} squares of {block} px are free enough to measure")
        c = np.cov(np.stack([lev, rms]))
        noise = np.mean([np.cov(np.stack(_block_stats(f, free, block))) for f in fakes], axis=0)
        return c - noise

    c1, c2 = true_cov(b1), true_cov(b2)
    v1, v2 = np.maximum(np.diag(c1), 0.0), np.maximum(np.diag(c2), 0.0)
    ok = (v1 > 0) & (v2 > 0)
    ratio = float(np.exp(np.mean(0.5 * np.log(v2[ok] / v1[ok])))) if ok.any() else 1.0
    grid = np.geomspace(1.0, 1000.0, 200)
    achieved = np.array([block_mean_sd(b2, s) / block_mean_sd(b1, s) for s in grid])  # rises with s
    scale = float(np.interp(ratio, achieved, grid))
    f1 = block_mean_sd(b1, scale)
    rho = float(np.clip(c1[0, 1] / np.sqrt(v1[0] * v1[1]), -1.0, 1.0)) if (v1 > 0).all() else 0.0
    return SkyModulation(level_sd=float(np.sqrt(v1[0]) / f1), noise_sd=float(np.sqrt(v1[1]) / f1), rho=rho,
                         scale=scale)


def source_mask(rgb01: np.ndarray, *, nsigma: float = 1.5, n_pixels: int = 5, grow: int = 2) -> np.ndarray:
    """(H, W) bool mask of the sources of a (H, W, 3) image in [0, 1]: photutils
    segmentation of the band mean (Background2D with 50 px boxes, 2 px FWHM Gaussian
    smoothing, ``nsigma`` times the background rms, ``n_pixels`` connected pixels), grown by
    ``grow`` pixels, plus pixels saturated in any band."""
    from astropy.convolution import convolve
    from photutils.background import Background2D, MedianBackground
    from photutils.segmentation import detect_sources, make_2dgaussian_kernel
    from scipy import ndimage

    lum = np.asarray(rgb01, np.float64).mean(axis=-1)
    bkg = Background2D(lum, 50, filter_size=3, bkg_estimator=MedianBackground())
    conv = convolve(lum - bkg.background, make_2dgaussian_kernel(2.0, size=5))
    segm = detect_sources(conv, nsigma * bkg.background_rms, n_pixels)
    mask = np.zeros(lum.shape, bool) if segm is None else segm.data > 0
    mask |= (np.asarray(rgb01) >= 1.0).any(axis=-1)
    return ndimage.binary_dilation(mask, iterations=grow) if grow else mask


def masked_autocorrelation(values: np.ndarray, weights: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocovariance of a (H, W) field seen through (H, W) 0/1 weights, lags
    ``-max_lag .. max_lag`` in both axes: ``xi(d) = sum w(x) w(x+d) v(x) v(x+d) /
    sum w(x) w(x+d)`` (both sums by FFT, zero-padded, so nothing wraps). Returns
    ``(2 max_lag + 1, 2 max_lag + 1)``, ``[max_lag, max_lag]`` = the variance."""
    h, w = values.shape
    shape = (2 * h, 2 * w)
    v = np.fft.rfft2(values * weights, shape)
    m = np.fft.rfft2(weights, shape)
    num = np.fft.irfft2(np.abs(v) ** 2, shape)
    den = np.fft.irfft2(np.abs(m) ** 2, shape)
    lags = np.r_[0 : max_lag + 1, -max_lag:0]
    sl = np.ix_(lags, lags)
    xi = num[sl] / np.maximum(den[sl], 1.0)
    return np.fft.fftshift(xi)


def _component_xi(x: np.ndarray, free: np.ndarray, vecs: np.ndarray, level: np.ndarray, half: int) -> list:
    """Autocovariances (lags ``-half .. half``) of the colour components ``(x - level) @ vecs``
    of an (H, W, 3) image over its ``free`` pixels (:func:`masked_autocorrelation`)."""
    comps = np.tensordot(x - level, vecs, axes=(-1, 0))
    w = free.astype(np.float64)
    return [masked_autocorrelation(comps[..., c] * w, w, half) for c in range(3)]


def _xi_power(xi: np.ndarray, taper: np.ndarray, n: int) -> np.ndarray:
    """Hann-tapered (2h+1, 2h+1) autocovariance -> (n, n) power spectrum (negative parts clipped)."""
    half = xi.shape[0] // 2
    grid = np.zeros((n, n))
    grid[np.ix_(np.r_[0 : half + 1, -half:0], np.r_[0 : half + 1, -half:0])] = np.fft.ifftshift(xi * taper)
    return np.clip(np.fft.fft2(grid).real, 0.0, None)


def _power_kernel(power: np.ndarray, half: int, variance: float) -> np.ndarray:
    """(2h+1, 2h+1) kernel whose square has the (n, n) power spectrum ``power``, scaled so
    that white noise convolved with it has ``variance``."""
    n = power.shape[0]
    k = np.fft.fftshift(np.fft.ifft2(np.sqrt(power)).real)[n // 2 - half : n // 2 + half + 1,
                                                           n // 2 - half : n // 2 + half + 1]
    return k * np.sqrt(variance / np.sum(k**2))


def measure_background(rgb01: np.ndarray, mask: np.ndarray, *, kernel: int = 25, n_quantiles: int = 257,
                       match_iterations: int = 2, match_size: int = 1024) -> Background:
    """Background model of an image: level, cross-band covariance and spatial power spectra of
    the source-free pixels.

    Parameters
    ----------
    rgb01 : array (H, W, 3), float in [0, 1]
    mask : array (H, W), bool
        True on sources (:func:`source_mask`); those pixels are left out.
    kernel : int
        Side K (odd) of the noise kernels: correlations up to ``(K - 1) / 2`` pixels are kept.
    n_quantiles : int
        Quantiles of each band's free pixels kept for the histogram mapping (0: Gaussian).
    match_iterations : int
        Rounds of pre-compensation for the histogram mapping (0: none). The mapping is not
        linear, so it changes the spectrum of the Gaussian noise it is applied to (on the deep
        field it lowers the lag-1 correlation of the weaker colour components from 0.38 to
        0.36); each round draws ``match_size``² pixels of the model, measures their
        autocovariances as the data's were measured, and multiplies each component's input
        power spectrum by target / drawn (ratio clipped to [1/4, 4]), as the iterative
        amplitude-adjusted surrogates of Schreiber & Schmitz (1996) do. Fixed seeds: the
        result is deterministic.

    Returns
    -------
    Background
        ``level`` = median of the free pixels per band; ``colour`` = eigenvectors of their
        band covariance; ``kernels`` such that white noise convolved with kernel ``c`` has the
        autocovariance of colour component ``c`` (measured with
        :func:`masked_autocorrelation`, Hann-tapered, turned into a power spectrum, its square
        root back into a kernel; pre-compensated as above); ``sigma`` = the resulting standard
        deviation per band (before the histogram mapping); ``quantiles`` of the free pixels per
        band.

    Raises
    ------
    ValueError
        If ``kernel`` is even or below 3, or ``match_iterations`` is negative.
    """
    if kernel % 2 == 0 or kernel < 3:
        raise ValueError(f"measure_background: kernel must be odd and >= 3, got {kernel}")
    if match_iterations < 0:
        raise ValueError(f"measure_background: match_iterations must be >= 0, got {match_iterations}")
    x = np.asarray(rgb01, np.float64)
    free = ~np.asarray(mask, bool)
    level = np.median(x[free], axis=0)
    r = x - level
    free &= (np.abs(r) < 5 * 1.4826 * np.median(np.abs(r[free]), axis=0)).all(axis=-1)  # stray outliers
    cov = np.cov(r[free].T)
    _, vecs = np.linalg.eigh(cov)
    half = kernel // 2
    n = 4 * kernel  # power spectrum grid
    taper = np.outer(np.hanning(2 * half + 3)[1:-1], np.hanning(2 * half + 3)[1:-1])
    target_xi = _component_xi(x, free, vecs, level, half)
    target = [_xi_power(xi, taper, n) for xi in target_xi]
    variances = [float(xi[half, half]) for xi in target_xi]
    quantiles = (np.quantile(x[free], np.linspace(0.0, 1.0, n_quantiles), axis=0).T.astype(np.float32)
                 if n_quantiles else None)

    def model(powers: list) -> Background:
        kernels = np.stack([_power_kernel(p, half, v) for p, v in zip(powers, variances)]).astype(np.float32)
        var = (vecs**2) @ np.array([np.sum(k.astype(np.float64) ** 2) for k in kernels])
        return Background(level=tuple(float(v) for v in level), sigma=tuple(float(s) for s in np.sqrt(var)),
                          colour=vecs.astype(np.float32), kernels=kernels, quantiles=quantiles)

    powers = [p.copy() for p in target]
    bg = model(powers)
    for it in range(match_iterations if quantiles is not None else 0):
        drawn = np.moveaxis(bg.draw((match_size, match_size), np.random.default_rng(it)).astype(np.float64), 0, -1)
        drawn_xi = _component_xi(drawn, np.ones(drawn.shape[:2], bool), vecs, level, half)
        for c in range(3):
            got = _xi_power(drawn_xi[c], taper, n)
            ratio = np.clip(target[c] / np.maximum(got, 1e-6 * got.max() + 1e-30), 0.25, 4.0)
            powers[c] = powers[c] * ratio
        bg = model(powers)
    return bg


BACKGROUND_VERSION = "hdf-background/3"  # bump when measure_background, measure_modulation or source_mask change


@functools.lru_cache(maxsize=1)
def hdf_background() -> Background:
    """Background of the built-in deep field (:func:`measure_background` with
    :func:`source_mask`): its sky level and its correlated (drizzled, JPEG-compressed) noise,
    and how both vary across the field (:func:`measure_modulation`).

    Measured once (about 10 s) and kept in ``$GALAXYGAN_CACHE/sky/`` (arrays only, no pickle)."""
    from galaxy_core.data.hdf import hdf_field
    from galaxy_core.paths import cache_dir

    path = cache_dir() / "sky" / f"{BACKGROUND_VERSION.replace('/', '-')}.npz"
    try:
        with np.load(path) as z:
            level_sd, noise_sd, rho, scale = (float(v) for v in z["modulation"])
            return Background(level=tuple(float(v) for v in z["level"]), sigma=tuple(float(v) for v in z["sigma"]),
                              colour=z["colour"], kernels=z["kernels"], quantiles=z["quantiles"],
                              modulation=SkyModulation(level_sd, noise_sd, rho, scale))
    except (OSError, KeyError, ValueError):
        pass
    rgb = hdf_field().astype(np.float64) / 255.0
    mask = source_mask(rgb)
    bg = measure_background(rgb, mask)
    bg = dataclasses.replace(bg, modulation=measure_modulation(rgb, mask, bg))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        m = bg.modulation
        np.savez(tmp, level=np.asarray(bg.level), sigma=np.asarray(bg.sigma), colour=bg.colour, kernels=bg.kernels,
                 quantiles=bg.quantiles, modulation=np.array([m.level_sd, m.noise_sd, m.rho, m.scale]))
        os.replace(tmp, path)
    except OSError:  # a read-only cache: measure again next time
        pass
    return bg


def white_hdf_background() -> Background:
    """The earlier background model: 3-sigma-clipped median and standard deviation of each
    band, independent white noise (kept for comparison)."""
    from astropy.stats import sigma_clipped_stats

    from galaxy_core.data.hdf import hdf_field

    rgb = hdf_field().astype(np.float64) / 255.0
    stats = [sigma_clipped_stats(rgb[..., c], sigma=3.0, maxiters=10) for c in range(3)]
    return Background(level=tuple(float(s[1]) for s in stats), sigma=tuple(float(s[2]) for s in stats))


# --------------------------------------------------------------------------- galaxies


def galaxy_flux(patches: np.ndarray, *, nsigma: float = 2.0, level=None) -> np.ndarray:
    """Flux images of galaxy patches: sky level subtracted, kept inside a source mask.

    Parameters
    ----------
    patches : array (n, 3, S, S), float in [-1, 1]
        Model-range patches (real stamps or generator output).
    nsigma : float
        A pixel belongs to the galaxy where the 3x3-smoothed band sum exceeds ``nsigma`` times
        the border noise of that sum; the mask is dilated by one pixel and only its
        connected part over the patch centre is kept; then :func:`edge_taper` is applied.
    level : sequence of 3 float, optional
        The sky level of each band (field units) where it is known, i.e. for stamps cut from
        the deep field (:func:`hdf_background`). Default: each patch's border median, the only
        estimate for a generator's patch. A border median holds the wings of the galaxy and of
        its neighbours (0.012 of a band sum above the field's level for the median real 32 px
        stamp, 0.05 at the 90th percentile), so taking it off dims the whole galaxy; the mask
        is found the same way either way.

    Returns
    -------
    ndarray (n, 3, S, S), float32
        Flux in field units (band value in [0, 1] minus the sky level), zero outside the mask.
    """
    from scipy import ndimage

    x = (np.asarray(patches, np.float32) + 1) / 2  # (n, 3, S, S) in [0, 1]
    border = np.concatenate([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], axis=-1)
    f = x - np.median(border, axis=-1)[..., None, None]
    total = ndimage.uniform_filter(f.sum(axis=1), size=(1, 3, 3))  # (n, S, S)
    edge = np.concatenate([total[:, 0], total[:, -1], total[:, 1:-1, 0], total[:, 1:-1, -1]], axis=-1)
    noise = 1.4826 * np.median(np.abs(edge - np.median(edge, axis=-1, keepdims=True)), axis=-1) / 3
    mask = total > nsigma * np.maximum(noise, 1e-4)[:, None, None]
    mask = ndimage.binary_dilation(mask, structure=np.ones((1, 3, 3), bool))
    mask = np.stack([_central_component(m) for m in mask])
    if level is not None:
        f = x - np.asarray(level, np.float32).reshape(1, 3, 1, 1)
    return (f * mask[:, None] * edge_taper(x.shape[-1])).astype(np.float32)


def edge_taper(side: int) -> np.ndarray:
    """(S, S) radial window: 1 within 0.35 S of the centre, falling as a half cosine to 0 at
    0.5 S, so a galaxy's flux never ends in a visible square at the patch border."""
    d = np.arange(side) - (side - 1) / 2
    r = np.hypot(d[:, None], d[None, :]) / side
    return np.where(r <= 0.35, 1.0, 0.5 * (1 + np.cos(np.pi * np.clip((r - 0.35) / 0.15, 0, 1)))).astype(np.float32)


def _central_component(mask: np.ndarray) -> np.ndarray:
    """The connected part of a (S, S) mask that covers most of the central quarter (the
    galaxy the patch is centred on; neighbours cut into the patch are dropped)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    s = mask.shape[0]
    centre = lab[s * 3 // 8 : s - s * 3 // 8, s * 3 // 8 : s - s * 3 // 8]
    counts = np.bincount(centre.ravel(), minlength=n + 1)[1:]
    return lab == (int(np.argmax(counts)) + 1) if counts.max() > 0 else np.zeros_like(mask)


class GalaxySource(Protocol):
    def __call__(self, cls: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, 3, S, S) float32 flux images for galaxies of classes ``cls`` (n,) in 1..3."""


class ModelGalaxies:
    """Galaxies from a single-galaxy checkpoint (:func:`galaxy_core.models.pretrained.load_pretrained`).

    A conditional model gets label ``cls - 1`` (small/medium/large); an unconditional one
    ignores the class. Latents are drawn from the tile's random stream.

    The real stamps every calibration aims at are the ``hdf`` stamps the model was trained on
    (:func:`training_stamps`: its resolution, and neighbours kept or replaced by sky).

    ``flux_match``: each galaxy's flux image is scaled so that its total flux has the rank in
    the real stamps' flux distribution that it has in the model's own (a monotone map
    calibrated once on :data:`CALIBRATION_SAMPLES` samples per class drawn with a fixed seed;
    per size class for a conditional model, over all stamps for an unconditional one). Shapes
    and the brightness order are the model's; the flux scale is the data's.

    ``sharpen``: each flux image is filtered with the radial transfer function that gives the
    model's galaxies the real stamps' mean power spectrum
    (:func:`galaxy_core.sky.calibrate.sharpness_transfer`; total flux kept exactly).
    ``pixel_match``: then every galaxy pixel's band mean is mapped monotonically onto the real
    stamps' galaxy-pixel distribution (:func:`galaxy_core.sky.calibrate.map_pixels`; colours
    kept). Both are calibrated once on :data:`CALIBRATION_SAMPLES` x 2 samples drawn with a
    fixed seed (classes cycling for a conditional model), each on the output of the steps
    before it (``flux_match``, then ``sharpen``, then ``pixel_match``).
    """

    def __init__(self, model, *, batch: int = 256, flux_match: bool = False, sharpen: bool = False,
                 pixel_match: bool = False):
        self.model, self.batch = model, batch
        self.conditional = model.num_classes > 0
        self.flux_match = flux_match
        self.sharpen, self.pixel_match = sharpen, pixel_match
        self._calibration: dict | None = None
        self._shape_cal: dict | None = None
        self.stamps = training_stamps(model.meta, model.resolution)

    def _raw(self, cls: np.ndarray, seed: int) -> np.ndarray:
        import torch

        g = torch.Generator().manual_seed(seed)
        z = self.model.family.sample_latents(self.model.model_cfg, len(cls), generator=g)
        labels = np.clip(cls - 1, 0, self.model.num_classes - 1) if self.conditional else None
        return galaxy_flux(self.model.generate(z, labels=labels, batch=self.batch))

    def calibration(self) -> dict:
        """``{class: (sorted model fluxes, sorted real fluxes)}``, class 0 = all (unconditional)."""
        if self._calibration is None:
            real = real_stamp_fluxes(**self.stamps)
            classes = (1, 2, 3) if self.conditional else (0,)
            cal = {}
            for c in classes:
                cls = np.full(CALIBRATION_SAMPLES, max(c, 1), np.int64)
                model_f = np.sort(self._raw(cls, seed=c).sum(axis=(1, 2, 3), dtype=np.float64))
                cal[c] = (model_f, real[c])
            self._calibration = cal
        return self._calibration

    def __call__(self, cls, rng):
        cls = np.asarray(cls, np.int64)
        if len(cls) == 0:
            r = self.model.resolution
            return np.zeros((0, 3, r, r), np.float32)
        flux = self._matched(cls, self._raw(cls, int(rng.integers(2**62))))
        return self._shaped(flux)

    def shape_calibration(self) -> dict:
        """``{"transfer": T(k) or None, "model_q", "real_q": pixel quantiles or None}``,
        measured once on a fixed-seed sample (see the class docstring)."""
        if self._shape_cal is None:
            from galaxy_core.sky.calibrate import pixel_quantiles, real_stamp_reference, sharpness_transfer

            cal: dict = {"transfer": None, "model_q": None, "real_q": None}
            if self.sharpen or self.pixel_match:
                n = 2 * CALIBRATION_SAMPLES
                cls = (np.arange(n) % 3 + 1).astype(np.int64)
                flux = self._matched(cls, self._raw(cls, seed=17))
                if self.sharpen:
                    from galaxy_core.sky.calibrate import apply_transfer

                    cal["transfer"] = sharpness_transfer(flux, **self.stamps)
                    flux = apply_transfer(flux, cal["transfer"])
                if self.pixel_match:
                    cal["model_q"] = pixel_quantiles(flux)
                    cal["real_q"] = real_stamp_reference(**self.stamps)["pixels"]
            self._shape_cal = cal
        return self._shape_cal

    def _shaped(self, flux: np.ndarray) -> np.ndarray:
        if not (self.sharpen or self.pixel_match):
            return flux
        from galaxy_core.sky.calibrate import apply_transfer, map_pixels

        cal = self.shape_calibration()
        if cal["transfer"] is not None:
            flux = apply_transfer(flux, cal["transfer"])
        if cal["model_q"] is not None:
            flux = map_pixels(flux, cal["model_q"], cal["real_q"])
        return flux

    def _matched(self, cls: np.ndarray, flux: np.ndarray) -> np.ndarray:
        if not self.flux_match:
            return flux
        cal = self.calibration()
        total = flux.sum(axis=(1, 2, 3), dtype=np.float64)
        scale = np.ones(len(cls))
        for c, (model_f, real_f) in cal.items():
            sel = (cls == c) if self.conditional else np.ones(len(cls), bool)
            u = np.interp(total[sel], model_f, np.linspace(0.0, 1.0, len(model_f)))
            target = np.quantile(real_f, u)
            ratio = np.where(total[sel] > 1e-6, target / np.maximum(total[sel], 1e-6), 1.0)
            scale[sel] = np.clip(ratio, 1 / MAX_FLUX_SCALE, MAX_FLUX_SCALE)
        return (flux * scale[:, None, None, None]).astype(np.float32)


CALIBRATION_SAMPLES = 512
MAX_FLUX_SCALE = 3.0


def training_stamps(meta: dict, resolution: int) -> dict:
    """``{"resolution", "neighbours"}`` of the real ``hdf`` stamps a galaxy model's calibrations
    aim at: the model's resolution, and the ``data.neighbours`` of its training config
    ("keep" when absent, as for every model trained before the option existed). A model trained
    on other data is still compared with the ``hdf`` stamps, the only real galaxies of the field."""
    data = (meta.get("config") or {}).get("data") or {}
    neighbours = data.get("neighbours", "keep") if data.get("dataset", "hdf") == "hdf" else "keep"
    return {"resolution": int(resolution), "neighbours": str(neighbours)}


SKY_REFERENCES = ("level", "border")  # real_galaxy_flux(sky=...)


@functools.lru_cache(maxsize=8)
def real_galaxy_flux(resolution: int = 32, neighbours: str = "keep", sky: str = "level") -> np.ndarray:
    """Flux images (:func:`galaxy_flux`) of the real ``hdf`` stamps (neighbours kept or replaced
    by sky, :func:`galaxy_core.data.hdf.prepare_hdf`), row ``i`` = stamp ``i``.

    ``sky``: ``"level"`` takes off the field's measured sky level (:func:`hdf_background`): the
    galaxies' true brightness, for every target in absolute units (pixel values, total fluxes,
    the reference's stamps); ``"border"`` takes off each stamp's border median, exactly as a
    generator's patch is measured, for comparisons of shape made the same way on both sides
    (the flux-normalised power spectrum of :func:`galaxy_core.sky.calibrate.sharpness_transfer`).

    Returns
    -------
    ndarray (n, 3, S, S), float32, read-only (shared by every caller)

    Raises
    ------
    ValueError
        ``sky`` not in :data:`SKY_REFERENCES`.
    """
    from galaxy_core.data.hdf import prepare_hdf

    if sky not in SKY_REFERENCES:
        raise ValueError(f"real_galaxy_flux: sky must be one of {SKY_REFERENCES}, got {sky!r}")
    ds = prepare_hdf(resolution=resolution, neighbours=neighbours, progress=False)
    flux = galaxy_flux(ds.to_model_range(), level=hdf_background().level if sky == "level" else None)
    flux.flags.writeable = False
    return flux


@functools.lru_cache(maxsize=4)
def real_stamp_fluxes(resolution: int = 32, neighbours: str = "keep") -> dict:
    """Total flux (band sum, :func:`real_galaxy_flux`, above the field's sky level) of the real
    ``hdf`` stamps (neighbours kept or replaced by sky, :func:`galaxy_core.data.hdf.prepare_hdf`):
    ``{0: all, 1: small, 2: medium, 3: large}``, each sorted."""
    from galaxy_core.data.hdf import prepare_hdf

    ds = prepare_hdf(resolution=resolution, neighbours=neighbours, progress=False)
    total = real_galaxy_flux(resolution, neighbours).sum(axis=(1, 2, 3), dtype=np.float64)
    names = np.asarray(ds.catalog["size_class"]).astype(str)
    out = {0: np.sort(total)}
    for c, n in enumerate(("small", "medium", "large"), 1):
        out[c] = np.sort(total[names == n])
    return out


def detection_areas(flux: np.ndarray) -> np.ndarray:
    """Segment areas of galaxy flux images, measured as the ``hdf`` catalogue measures its sources.

    The luminance of each flux image (:func:`skimage.color.rgb2gray`, the catalogue's detection
    image) is smoothed with the catalogue's
    Gaussian kernel (:class:`galaxy_core.data.hdf.DetectionParams`: FWHM ``kernel_fwhm``, side
    ``kernel_size``) and thresholded at ``nsigma`` times the field's luminance noise
    (:func:`galaxy_core.data.hdf.detection_noise`); the area is the pixel count of the connected
    region (4-connected, as :func:`galaxy_flux` picks its galaxy) that covers most of the stamp's
    central quarter. There is no
    deblending, so the figure is meant for isolated galaxies.

    Parameters
    ----------
    flux : array (n, 3, S, S), float
        Flux images in field units (:func:`galaxy_flux`).

    Returns
    -------
    ndarray (n,), int64
        Areas in pix2 (0 where nothing is above the threshold).
    """
    from photutils.segmentation import make_2dgaussian_kernel
    from scipy import ndimage
    from skimage.color import rgb2gray

    from galaxy_core.data.hdf import DETECTION, detection_noise

    lum = rgb2gray(np.moveaxis(np.asarray(flux, np.float64), 1, -1))  # (n, S, S)
    kernel = np.asarray(make_2dgaussian_kernel(DETECTION.kernel_fwhm, size=DETECTION.kernel_size).array)
    conv = ndimage.convolve(lum, kernel[None], mode="constant")
    above = conv > DETECTION.nsigma * detection_noise()
    return np.array([int(_central_component(m).sum()) for m in above], np.int64)


class ClassMatchedGalaxies:
    """Galaxies of the size class each cell asks for, from a source that ignores classes.

    For ``n`` requested galaxies, ``candidates * n`` are drawn from ``source`` (any
    :class:`GalaxySource`, e.g. an unconditional :class:`ModelGalaxies`), each is given the
    class its :func:`detection_areas` area falls in (the position model's thresholds:
    :func:`galaxy_core.sky.grids.size_thresholds` of the catalogue the grids are made from,
    by default the ``hdf`` terciles), and every cell takes an unused candidate of its class;
    where the class has run out, the unused candidate whose area is nearest the class's range.
    So the grid's size classes reach the sky even when the galaxy model is unconditional (a
    conditional source is asked for the requested classes, ``candidates`` times over).

    The area is measured without deblending, so a galaxy drawn with a neighbour joined to it
    counts as one large source; it is exact for models of isolated galaxies
    (``data.neighbours = "sky"``). The thresholds default to those of the ``hdf`` grids; give
    a position model's own when it was trained on another catalogue. Measured on the composer's
    default it leaves the classifier test where it was (``docs/families/sky.md``).
    """

    def __init__(self, source, *, candidates: int = 4, thresholds: tuple[float, float] | None = None):
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        self.source, self.candidates = source, int(candidates)
        if thresholds is None:
            from galaxy_core.sky.grids import hdf_sources, size_thresholds

            thresholds = size_thresholds(hdf_sources()["area"])
        self.thresholds = (float(thresholds[0]), float(thresholds[1]))

    def classes_of(self, areas: np.ndarray) -> np.ndarray:
        """(n,) int64 classes 1..3 of areas (pix2): below ``lo``, below ``hi``, the rest."""
        lo, hi = self.thresholds
        return np.where(areas < lo, 1, np.where(areas < hi, 2, 3)).astype(np.int64)

    def __call__(self, cls, rng):
        cls = np.asarray(cls, np.int64)
        pool = self.source(np.tile(cls, self.candidates), rng)  # a conditional source gets the asked classes
        if len(cls) == 0:
            return pool
        areas = detection_areas(pool).astype(np.float64)
        have = self.classes_of(areas)
        lo, hi = self.thresholds
        ranges = {1: (-np.inf, lo), 2: (lo, hi), 3: (hi, np.inf)}
        free = np.ones(len(pool), bool)
        pick = np.empty(len(cls), np.int64)
        for i, c in enumerate(cls):
            c = int(np.clip(c, 1, 3))
            match = np.flatnonzero(free & (have == c))
            if len(match):
                j = match[0]
            else:
                a, b = ranges[c]
                dist = np.where(areas < a, a - areas, np.where(areas >= b, areas - b, 0.0))
                j = np.flatnonzero(free)[np.argmin(dist[free])]
            pick[i] = j
            free[j] = False
        return pool[pick]


class StampGalaxies:
    """Real ``hdf`` 32 px stamps of the requested size class, drawn at random (a reference);
    ``neighbours`` as in :func:`galaxy_core.data.hdf.prepare_hdf` (kept, or replaced by sky)."""

    def __init__(self, *, resolution: int = 32, neighbours: str = "keep"):
        from galaxy_core.data.hdf import prepare_hdf

        ds = prepare_hdf(resolution=resolution, neighbours=neighbours, progress=False)
        self.flux = real_galaxy_flux(resolution, neighbours)  # above the field's sky level
        names = np.asarray(ds.catalog["size_class"]).astype(str)
        self.by_class = {c: np.flatnonzero(names == n) for c, n in enumerate(("small", "medium", "large"), 1)}

    def __call__(self, cls, rng):
        idx = [rng.choice(self.by_class[int(c)]) for c in np.asarray(cls)]
        return self.flux[np.asarray(idx, np.int64)] if idx else self.flux[:0]


class CatalogueGrids:
    """Grids of the deep field's own catalogue (a reference for the position model): each call
    returns one of the ``count`` grids of :func:`galaxy_core.sky.calibrate.catalogue_grids`
    (random 512 px tiles of the ``hdf`` grid catalogue, the grids the position models were
    trained on), classes 0..3 (``classes``) or occupancy 0/1."""

    def __init__(self, *, classes: bool = True, count: int = 1024):
        from galaxy_core.sky.calibrate import catalogue_grids

        self.grids = catalogue_grids(classes=classes, count=count)  # (count, G, G), shared, read-only
        self.grid = self.grids.shape[-1]
        self.cell_px = DEFAULT_CELL_PX  # the default grid options' cells, which these grids use

    def __call__(self, rng):
        return self.grids[int(rng.integers(len(self.grids)))].copy()


class ModelPositions:
    """Grids from a position checkpoint: one generated grid per tile.

    ``mode`` ``"argmax"`` takes the most likely class per cell, ``"sample"`` draws it. An
    occupancy model (2 classes) gives class 1 per occupied cell; ``class_mix`` (3 weights)
    then assigns small/medium/large at random.

    ``match_classes``: the occupied cells of each class are thinned at random so that the
    fraction of cells holding that class is, on average, that of the grids the model was
    trained on (``properties.class_fractions``): a class the model draws too often keeps each
    of its cells with probability ``data fraction / model fraction``; a class it draws too
    rarely is kept whole. The model's fractions are measured once on
    :data:`CALIBRATION_GRIDS` grids drawn with fixed seeds. Only for a model with size classes
    (4 classes) or an occupancy model (2 classes, then against the data's occupancy).

    ``properties`` (:func:`galaxy_core.sky.grids.grid_properties`) are those of the model's
    own training grids: ``cell_px`` (the cell size :func:`compose_sky` uses by default), the
    size thresholds and the class fractions.
    """

    def __init__(self, model, *, mode: str = "sample", class_mix: tuple[float, float, float] | None = None,
                 match_classes: bool = False):
        from galaxy_core.sky.grids import grid_properties

        self.model, self.mode = model, mode
        self.class_mix = class_mix
        self.grid = model.resolution
        self.match_classes = match_classes
        self.properties = grid_properties(model.meta.get("data", {}))
        self.cell_px = self.properties.cell_px
        self._keep: np.ndarray | None = None

    def _cells(self, rng):
        import torch

        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        z = self.model.family.sample_latents(self.model.model_cfg, 1, generator=g)
        return sample_cells(self.model.generate(z), mode=self.mode, rng=rng)[0]

    def keep_probabilities(self) -> np.ndarray:
        """(K,) probability that an occupied cell of class k is kept (``[0]`` unused, 1.0)."""
        if self._keep is None:
            k = self.model.model_cfg.num_classes
            if k not in (2, 4):
                raise ValueError(f"match_classes: the position model has {k} classes; the data's class fractions "
                                 "exist for 2 (occupancy) or 4 (empty + three size classes)")
            data_f = self.properties.class_fractions
            if data_f is None or len(data_f) != k:
                name = getattr(getattr(self.model, "path", None), "name", "the position model")
                raise ValueError(f"match_classes: {name} does not record the class fractions of the grids it was "
                                 "trained on (saved before they were recorded); retrain it, or compose without "
                                 "matching the classes")
            grids = np.stack([self._cells(np.random.default_rng([CALIBRATION_SEED, i]))
                              for i in range(CALIBRATION_GRIDS)])
            model_f = np.bincount(np.clip(grids, 0, k - 1).ravel(), minlength=k) / grids.size
            keep = np.ones(k)
            keep[1:] = np.minimum(1.0, data_f[1:] / np.maximum(model_f[1:], 1e-12))
            self._keep = keep
        return self._keep

    def __call__(self, rng):
        cells = self._cells(rng)
        if self.match_classes:
            keep = self.keep_probabilities()
            u = rng.random(cells.shape)
            cells = np.where((cells > 0) & (u >= keep[np.clip(cells, 0, len(keep) - 1)]), 0, cells)
        return assign_classes(cells, self.class_mix, rng) if self.class_mix is not None else cells


CALIBRATION_GRIDS = 256
CALIBRATION_SEED = 23


def assign_classes(cells: np.ndarray, class_mix, rng: np.random.Generator) -> np.ndarray:
    """Occupied cells get class 1..3 drawn with probabilities ``class_mix`` (normalised)."""
    p = np.asarray(class_mix, float)
    p = p / p.sum()
    out = np.zeros_like(cells)
    occ = cells > 0
    out[occ] = rng.choice(np.arange(1, len(p) + 1), size=int(occ.sum()), p=p)
    return out


class RandomPositions:
    """Each cell occupied independently with probability ``p``; classes from ``class_mix``."""

    def __init__(self, *, grid: int = 32, p: float = 0.13, class_mix=(1.0, 1.0, 1.0)):
        self.grid, self.p, self.class_mix = grid, p, class_mix

    @classmethod
    def like(cls, grids) -> "RandomPositions":
        """Independent cells at the occupancy and class mix of ``grids`` (a sequence of (G, G)
        int grids, e.g. a position model's): what is left of them without their arrangement
        (the paper's first experiment)."""
        grids = np.asarray(grids)
        counts = np.bincount(grids[grids > 0].ravel(), minlength=4)[1:4] + 1e-9
        return cls(grid=int(grids.shape[-1]), p=float((grids > 0).mean()), class_mix=tuple(counts / counts.sum()))

    def __call__(self, rng):
        cells = (rng.random((self.grid, self.grid)) < self.p).astype(np.int64)
        return assign_classes(cells, self.class_mix, rng)


class FixedPositions:
    """The same grid for every tile."""

    def __init__(self, cells: np.ndarray):
        self.cells = np.asarray(cells, np.int64)
        self.grid = self.cells.shape[0]

    def __call__(self, rng):
        return self.cells


# --------------------------------------------------------------------------- placement


def add_stamp(image: np.ndarray, stamp: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """Add ``stamp`` (C, S, S) into ``image`` (C, H, W) with its [0, 0] at pixel (x0, y0),
    clipping at the edges; returns the (C,) flux actually added."""
    c, s1, s2 = stamp.shape
    h, w = image.shape[1:]
    ya, yb, xa, xb = max(y0, 0), min(y0 + s1, h), max(x0, 0), min(x0 + s2, w)
    if ya >= yb or xa >= xb:
        return np.zeros(c, np.float64)
    part = stamp[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
    image[:, ya:yb, xa:xb] += part
    return part.sum(axis=(1, 2), dtype=np.float64)


@dataclass
class Sky:
    """A composed sky.

    Attributes
    ----------
    image : ndarray (3, H, W), float32
        R, G, B in field units (see module docstring).
    truth : astropy.table.Table
        One row per placed galaxy: ``x``, ``y`` (centre, pix), ``cls`` (1..3; -1 = a faint
        source below the grid catalogue's size cut, see ``compose_sky(faint=...)``; -2 = a star,
        ``compose_sky(stars=...)``), ``flux`` (sum
        over bands of the flux added inside the sky), ``flux_r``, ``flux_g``, ``flux_b``,
        ``tile``.
    background_sum : float
        Sum of the background over all bands and pixels.
    meta : dict
        Seed, size, cell size and the sources used.
    """

    image: np.ndarray
    truth: object
    background_sum: float
    meta: dict = field(default_factory=dict)


def _truth_table(rows: list[dict]):
    from astropy.table import Table

    names = ("x", "y", "cls", "flux", "flux_r", "flux_g", "flux_b", "tile")
    dtypes = (np.float64, np.float64, np.int16, np.float64, np.float64, np.float64, np.float64, np.int32)
    t = Table({n: np.array([r[n] for r in rows], dtype=d) for n, d in zip(names, dtypes)})
    t["x"].unit = t["y"].unit = "pix"
    return t


def background_meta(background: Background, modulate: bool = True) -> dict:
    """What a sky's ``meta["background"]`` records of the background it was drawn on (level,
    sigma, correlated noise or not, and the :class:`SkyModulation` applied, None if none); the
    FITS writer (:func:`galaxy_core.sky.mosaic.write_sky`) reads the modulation from here."""
    mod = background.modulation if modulate else None
    return {"level": list(background.level), "sigma": list(background.sigma),
            "correlated": background.kernels is not None,
            "modulation": None if mod is None else dataclasses.asdict(mod)}


def modulation_fields(background: Background, height: int, width: int, seed: int,
                      modulate: bool = True) -> Callable[[int, int, int, int], np.ndarray | None]:
    """The :class:`SkyModulation` fields of a ``height`` x ``width`` sky of ``seed``, as a
    function ``(y0, x0, h, w) -> (2, h, w)`` for :meth:`Background.draw` (None without a
    modulation or with ``modulate`` False). Drawn once per sky on the modulation's coarse grid
    from their own stream, ``SeedSequence(seed, spawn_key=(2**32 - 1,))``, which no tile's
    ``SeedSequence([seed, tile])`` equals, so adding them changes no other random draw."""
    mod = background.modulation if modulate else None
    if mod is None:
        return lambda y0, x0, h, w: None
    coarse = mod.coarse(height, width, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**32 - 1,))))
    return lambda y0, x0, h, w: mod.at(coarse, y0, x0, h, w)


DEFAULT_CELL_PX = GridOptions.cell_px  # cell side of position sources that record none (random, fixed grids)


def resolve_cell_px(positions, cell_px: int | None) -> int:
    """The cell side to compose ``positions`` at: its own ``cell_px`` when it has one (a
    position model's training grids), else ``cell_px``, else :data:`DEFAULT_CELL_PX`. Raises
    ValueError when ``cell_px`` is given and differs from the source's own."""
    own = getattr(positions, "cell_px", None)
    if own is not None and cell_px is not None and int(cell_px) != int(own):
        raise ValueError(f"cell_px {cell_px} differs from the {own} px cells of the grids the position source "
                         "was made from; its galaxy density holds at that scale only (leave cell_px unset)")
    out = int(own if own is not None else cell_px if cell_px is not None else DEFAULT_CELL_PX)
    if out < 1:
        raise ValueError(f"cell_px must be a positive number of pixels, got {out}")
    return out


def compose_sky(*, height: int, width: int, positions: Callable[[np.random.Generator], np.ndarray],
                galaxies: GalaxySource | None, cell_px: int | None = None, jitter: float = 0.35,
                background: Background | None = None, faint=None, stars=None, seed: int = 0,
                modulate: bool = True, progress: bool | Callable[[int, int], None] = False) -> Sky:
    """Compose a sky tile by tile from a position source and a galaxy source.

    Parameters
    ----------
    height, width : int
        Sky size in pixels (any size; tiles of ``G * cell_px`` are stitched and the last ones
        cropped).
    positions : callable rng -> (G, G) int, with attribute ``grid`` (G)
        Cell classes for one tile (:class:`ModelPositions`, :class:`RandomPositions`,
        :class:`FixedPositions`).
    galaxies : callable (cls, rng) -> (n, 3, S, S), or None
        Flux images of the galaxies (:class:`ModelGalaxies`, :class:`StampGalaxies`); None
        composes the background alone (with the same random stream).
    cell_px : int, optional
        Cell side in sky pixels. Default: the position source's own ``cell_px`` (a position
        model's is that of its training grids, 16 for the shipped ones), else 16.
    jitter : float
        Sub-cell jitter of each position, fraction of a cell in [0, 0.5].
    background : Background, optional
        Default :func:`hdf_background`.
    faint : callable ((h, w), rng) -> dict, optional
        Sources below the grid catalogue's size cut, added to each tile after its galaxies
        (:class:`galaxy_core.sky.calibrate.FaintSources`; its own random stream, the fourth
        child of the tile's seed sequence, so the other streams are unchanged); they enter
        the truth table with ``cls`` -1. Only with ``galaxies``.
    stars : callable ((h, w), rng) -> dict, optional
        Stars, added to each tile after the faint sources, the same way
        (:class:`galaxy_core.sky.calibrate.FieldStars`; the tile's fifth random stream);
        truth rows with ``cls`` -2. Only with ``galaxies``.
    seed : int
        The sky is a pure function of the seed and the sources.
    modulate : bool
        Vary the sky level and the noise amplitude across the sky as the background's
        ``modulation`` says (:class:`SkyModulation`; drawn for the whole sky from its own random
        stream, so the other streams are unchanged). No effect on a background without one.
    progress : bool or callable (done, total) -> None
        True: a tqdm bar over the tiles; a callable is called after each tile's background
        and after each tile's galaxies (``total`` = 2 x tiles), e.g. to drive an app's bar.

    Returns
    -------
    Sky

    Raises
    ------
    ValueError
        ``cell_px`` differs from the position source's own (its galaxy density holds at its
        cell size only).
    """
    from tqdm.auto import tqdm

    cell_px = resolve_cell_px(positions, cell_px)
    bg = background or hdf_background()
    image = np.empty((3, height, width), np.float32)
    tile = int(positions.grid) * cell_px
    n_ty, n_tx = -(-height // tile), -(-width // tile)
    rows: list[dict] = []
    bg_sum = 0.0
    report = progress if callable(progress) else (lambda done, total: None)
    n_tiles = n_ty * n_tx
    fields = modulation_fields(bg, height, width, seed, modulate)
    for t in tqdm(range(n_ty * n_tx), desc="sky tiles", disable=progress is not True):
        ty, tx = divmod(t, n_tx)
        y_off, x_off = ty * tile, tx * tile
        bg_rng, pos_rng, gal_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, t]).spawn(3))
        h, w = min(tile, height - y_off), min(tile, width - x_off)
        back = bg.draw((h, w), bg_rng, fields(y_off, x_off, h, w))
        bg_sum += float(back.sum(dtype=np.float64))
        image[:, y_off : y_off + h, x_off : x_off + w] = back
        report(t + 1, 2 * n_tiles)
    for t in range(n_ty * n_tx):  # galaxies after every background, so stamps may cross tiles
        if galaxies is None:
            break
        ty, tx = divmod(t, n_tx)
        y_off, x_off = ty * tile, tx * tile
        _, pos_rng, gal_rng, faint_rng, star_rng = (np.random.default_rng(s)
                                                    for s in np.random.SeedSequence([seed, t]).spawn(5))
        cat = grid_to_catalogue(positions(pos_rng), cell_px=cell_px, jitter=jitter, rng=pos_rng)
        x, y = cat["x"] + x_off, cat["y"] + y_off
        inside = (x < width - 0.5) & (y < height - 0.5)
        x, y, cls = x[inside], y[inside], cat["cls"][inside]
        stamps = galaxies(cls, gal_rng)
        s = stamps.shape[-1]
        for xi, yi, ci, st in zip(x, y, cls, stamps):
            x0, y0 = int(round(xi - (s - 1) / 2)), int(round(yi - (s - 1) / 2))
            f = add_stamp(image, st, x0, y0)
            rows.append({"x": x0 + (s - 1) / 2, "y": y0 + (s - 1) / 2, "cls": int(ci), "flux": float(f.sum()),
                         "flux_r": f[0], "flux_g": f[1], "flux_b": f[2], "tile": t})
        h, w = min(tile, height - y_off), min(tile, width - x_off)
        for extra, extra_rng, label in ((faint, faint_rng, -1), (stars, star_rng, -2)):
            if extra is None:
                continue
            src = extra((h, w), extra_rng)
            for xi, yi, st in zip(src["x"] + x_off, src["y"] + y_off, src["stamps"]):
                fs = st.shape[-1]  # stamps may differ in size
                x0, y0 = int(np.round(xi)) - (fs - 1) // 2, int(np.round(yi)) - (fs - 1) // 2
                f = add_stamp(image, st, x0, y0)
                rows.append({"x": float(xi), "y": float(yi), "cls": label, "flux": float(f.sum()),
                             "flux_r": f[0], "flux_g": f[1], "flux_b": f[2], "tile": t})
        report(n_tiles + t + 1, 2 * n_tiles)
    meta = {"seed": seed, "height": height, "width": width, "cell_px": cell_px, "jitter": jitter,
            "tile_px": tile, "faint": faint is not None, "stars": stars is not None,
            "background": background_meta(bg, modulate)}
    return Sky(image=image, truth=_truth_table(rows), background_sum=bg_sum, meta=meta)
