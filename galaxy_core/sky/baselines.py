"""Simple sky baselines for the realism comparison (after the ETH two-stage sparse-sky paper).

Baseline 1 (:func:`baseline_uniform`): galaxy count Poisson with the data's surface density,
positions uniform over the sky, every galaxy a fixed diamond-shaped profile
``I(dx, dy) = A * max(0, 1 - (|dx| + |dy|) / s)`` with half-diagonal ``s ~ N(size_mean,
size_std)`` (clipped at 1 px) and peak ``A ~ N(peak_mean, peak_std)`` (clipped at 0),
coloured by the mean colour of the deep field's galaxies.

Baseline 2 (:func:`baseline_geometric`): small and large galaxies as two separate
populations, each with a Poisson count and uniform positions; a galaxy's size (Gaussian
sigma, pix) is ``scale * K`` with ``K ~ Geometric(p_size)`` on 1, 2, ... and its peak
``peak_unit * M`` with ``M ~ Geometric(p_peak)``, per population.

Both are drawn on the composer's background (:func:`~galaxy_core.sky.background.hdf_background`
by default, with its level and noise varying across the sky as the field's do; ``modulate``
False keeps them uniform) and return a :class:`~galaxy_core.sky.compose.Sky` whose truth table also holds each
galaxy's drawn ``size`` and ``peak``, so the drawn values can be checked against the declared
distributions; the default parameters are set from the ``hdf`` catalogue (documented in
``docs/families/sky.md``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from galaxy_core.sky.background import Background, background_meta, hdf_background, modulation_fields
from galaxy_core.sky.compose import Sky
from galaxy_core.sky.stamps import add_stamp

# Mean R, G, B flux fractions of the deep field's usable galaxies (hdf catalogue flux_r/g/b).
HDF_COLOUR = (0.34, 0.29, 0.37)
HDF_DENSITY = 4.9e-4  # galaxies (area >= 50 pix2, no stars) per pixel in the deep field


@dataclass(frozen=True)
class Baseline1:
    density: float = HDF_DENSITY    # galaxies per pixel
    size_mean: float = 6.0          # diamond half-diagonal s (pix)
    size_std: float = 2.0
    peak_mean: float = 1.5          # peak A, band sum (field units)
    peak_std: float = 0.5


@dataclass(frozen=True)
class Baseline2:
    density_small: float = 0.67 * HDF_DENSITY
    density_large: float = 0.33 * HDF_DENSITY
    scale_small: float = 1.0        # sigma = scale * K (pix)
    p_size_small: float = 0.5       # mean K = 1 / p = 2
    scale_large: float = 1.5
    p_size_large: float = 0.4       # mean K = 2.5
    peak_unit: float = 0.3          # peak = peak_unit * M (band sum, field units)
    p_peak_small: float = 0.4       # mean M = 2.5
    p_peak_large: float = 0.2       # mean M = 5


def _diamond(s: float, peak: float) -> np.ndarray:
    r = int(np.ceil(s))
    d = np.abs(np.arange(-r, r + 1))
    return peak * np.clip(1 - (d[:, None] + d[None, :]) / s, 0, None)  # (2r+1, 2r+1)


def _gaussian(sigma: float, peak: float) -> np.ndarray:
    r = int(np.ceil(4 * sigma))
    d = np.arange(-r, r + 1)
    return peak * np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma**2))


def _place(image, profiles, xs, ys, sizes, peaks, classes, colour):
    rows = []
    col = np.asarray(colour, np.float32)[:, None, None] / np.sum(colour)
    for prof, x, y, s, a, c in zip(profiles, xs, ys, sizes, peaks, classes):
        stamp = (col * prof[None]).astype(np.float32)
        r = (prof.shape[0] - 1) // 2
        xi, yi = int(round(x)), int(round(y))
        f = add_stamp(image, stamp, xi - r, yi - r)
        rows.append({"x": float(xi), "y": float(yi), "cls": int(c), "flux": float(f.sum()), "flux_r": f[0],
                     "flux_g": f[1], "flux_b": f[2], "tile": 0, "size": float(s), "peak": float(a)})
    return rows


def _table(rows):
    from astropy.table import Table

    names = ("x", "y", "cls", "flux", "flux_r", "flux_g", "flux_b", "tile", "size", "peak")
    from galaxy_core.sky.compose import describe_truth

    return describe_truth(Table({n: np.array([r[n] for r in rows], dtype=np.int16 if n == "cls" else np.float64)
                                 for n in names}))


def baseline_uniform(*, height: int, width: int, params: Baseline1 = Baseline1(), seed: int = 0,
                     background: Background | None = None, modulate: bool = True) -> Sky:
    """Baseline 1: uniform positions, diamond galaxies, normal sizes and peaks (see module docstring).

    Returns
    -------
    Sky
        ``truth`` has ``size`` (s, pix) and ``peak`` (A) as drawn before clipping.
    """
    bg = background or hdf_background()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    image = bg.draw((height, width), rng, modulation_fields(bg, height, width, seed, modulate)(0, 0, height, width))
    bg_sum = float(image.sum(dtype=np.float64))
    n = rng.poisson(params.density * height * width)
    xs, ys = rng.uniform(-0.5, width - 0.5, n), rng.uniform(-0.5, height - 0.5, n)
    sizes = rng.normal(params.size_mean, params.size_std, n)
    peaks = rng.normal(params.peak_mean, params.peak_std, n)
    profiles = [_diamond(max(s, 1.0), max(a, 0.0)) for s, a in zip(sizes, peaks)]
    rows = _place(image, profiles, xs, ys, sizes, peaks, np.ones(n, int), HDF_COLOUR)
    return Sky(image=image, truth=_table(rows), background_sum=bg_sum,
               meta={"seed": seed, "height": height, "width": width, "baseline": 1, "params": asdict(params),
                     "background": background_meta(bg, modulate)})


def baseline_geometric(*, height: int, width: int, params: Baseline2 = Baseline2(), seed: int = 0,
                       background: Background | None = None, modulate: bool = True) -> Sky:
    """Baseline 2: small and large populations with geometric sizes and peaks (see module docstring).

    Returns
    -------
    Sky
        ``truth`` has ``cls`` 1 (small) or 3 (large), ``size`` (sigma, pix) and ``peak``.
    """
    bg = background or hdf_background()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    image = bg.draw((height, width), rng, modulation_fields(bg, height, width, seed, modulate)(0, 0, height, width))
    bg_sum = float(image.sum(dtype=np.float64))
    rows = []
    p = params
    for cls, dens, scale, p_size, p_peak in ((1, p.density_small, p.scale_small, p.p_size_small, p.p_peak_small),
                                              (3, p.density_large, p.scale_large, p.p_size_large, p.p_peak_large)):
        n = rng.poisson(dens * height * width)
        xs, ys = rng.uniform(-0.5, width - 0.5, n), rng.uniform(-0.5, height - 0.5, n)
        sizes = scale * rng.geometric(p_size, n)
        peaks = p.peak_unit * rng.geometric(p_peak, n)
        profiles = [_gaussian(s, a) for s, a in zip(sizes, peaks)]
        rows += _place(image, profiles, xs, ys, sizes, peaks, np.full(n, cls), HDF_COLOUR)
    return Sky(image=image, truth=_table(rows), background_sum=bg_sum,
               meta={"seed": seed, "height": height, "width": width, "baseline": 2, "params": asdict(p),
                     "background": background_meta(bg, modulate)})
