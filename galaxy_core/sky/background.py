"""The composer's sky background: the deep field's sky level and noise, measured and redrawn.

Flux convention (shared by the whole sky package): images are in the ``hdf`` field's units,
each band of the 8-bit composite scaled to [0, 1] (not calibrated). :func:`measure_background`
measures the sky of any such image outside its sources (:func:`source_mask`): each band's level
and one-point distribution, the cross-band covariance and the spatial correlation of the noise,
and how the level and the noise amplitude vary across the image (:func:`measure_modulation`);
:class:`Background` draws new sky with those statistics, and :func:`hdf_background` is the
deep field's, measured once per cache.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from galaxy_core.io.atomic import cached_arrays


BANDS = ("R", "G", "B")


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

    def measure() -> dict:
        rgb = hdf_field().astype(np.float64) / 255.0
        mask = source_mask(rgb)
        bg = measure_background(rgb, mask)
        m = measure_modulation(rgb, mask, bg)
        return {"level": np.asarray(bg.level), "sigma": np.asarray(bg.sigma), "colour": bg.colour,
                "kernels": bg.kernels, "quantiles": bg.quantiles,
                "modulation": np.array([m.level_sd, m.noise_sd, m.rho, m.scale])}

    z = cached_arrays(cache_dir() / "sky" / f"{BACKGROUND_VERSION.replace('/', '-')}.npz", measure,
                      keys=("level", "sigma", "colour", "kernels", "quantiles", "modulation"))
    level_sd, noise_sd, rho, scale = (float(v) for v in z["modulation"])
    return Background(level=tuple(float(v) for v in z["level"]), sigma=tuple(float(v) for v in z["sigma"]),
                      colour=z["colour"], kernels=z["kernels"], quantiles=z["quantiles"],
                      modulation=SkyModulation(level_sd, noise_sd, rho, scale))


def white_hdf_background() -> Background:
    """The earlier background model: 3-sigma-clipped median and standard deviation of each
    band, independent white noise (kept for comparison)."""
    from astropy.stats import sigma_clipped_stats

    from galaxy_core.data.hdf import hdf_field

    rgb = hdf_field().astype(np.float64) / 255.0
    stats = [sigma_clipped_stats(rgb[..., c], sigma=3.0, maxiters=10) for c in range(3)]
    return Background(level=tuple(float(s[1]) for s in stats), sigma=tuple(float(s[2]) for s in stats))


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
