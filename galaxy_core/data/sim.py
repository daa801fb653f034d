"""The built-in ``sim`` dataset: SDSS-like g, r, i galaxy stamps simulated with GalSim.

Each stamp holds one main galaxy at its centre (a de Vaucouleurs bulge plus an exponential disk,
with star-forming knots in blue disks), seen through a Kolmogorov atmosphere whose seeing
varies from stamp to stamp, with the Poisson noise of the SDSS sky, sometimes a neighbouring
galaxy and sometimes foreground stars. Images are sky-subtracted fluxes in **nanomaggies per
pixel** (AB magnitude ``m = 22.5 - 2.5 log10(f)``), 0.396 arcsec pixels, bands ordered g, r, i.

Every stamp ``i`` of seed ``s`` is drawn from random streams seeded by ``(s, i)`` alone, so a
build gives the same cube whatever the number of worker processes or the chunking.

The galaxy population follows published SDSS relations (parameter values are the ones below;
where a paper gives a figure rather than a formula the numbers are approximate readings):

* luminosity function: Schechter fit to the SDSS main sample, ``M* - 5 log h = -20.44``,
  ``alpha = -1.05`` (Blanton et al. 2003, ApJ 592, 819), galaxies spread uniformly in comoving
  volume (flat LCDM, H0 = 70 km/s/Mpc, Omega_m = 0.3);
* selection: the main-sample limits ``r <= 17.77`` and ``mu50 <= 24.5 mag/arcsec^2``
  (Strauss et al. 2002, AJ 124, 1810) with a bright limit ``r >= 14``; the resulting redshift
  distribution has a median near 0.1, as in Strauss et al. 2002;
* colour bimodality: a red sequence and a blue cloud in g - r (Strateva et al. 2001, AJ 122,
  1861; Blanton et al. 2003, ApJ 594, 186), the red fraction rising with luminosity
  (Baldry et al. 2004, ApJ 600, 681);
* sizes: the r-band half-light radius follows the early- and late-type size-luminosity
  relations and their luminosity-dependent log-normal scatter (Shen et al. 2003, MNRAS 343,
  978);
* disk axis ratios: randomly inclined disks of intrinsic thickness 0.2; the seeing FWHM grows
  to the blue as ``lambda^-0.2``; band wavelengths from Fukugita et al. 1996 (AJ 111, 1748).

See ``docs/datasets/sim.md`` for the dataset card.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from galaxy_core.errors import DataError
from galaxy_core.progress import Progress, ProgressBar

VERSION = "sim/1"  # bump when the simulated images or the truth catalogue change
PREPARE_VERSION = 2  # bump when cropping, resizing or stretching of the raw cube changes
# 2: symmetric centre crop, shared flux resampling (galaxy_core.io.units) and stretch fitting
BANDS = ("g", "r", "i")
PIXEL_SCALE = 0.396  # arcsec / pixel, SDSS imaging camera
ZERO_POINT = 22.5  # AB magnitude of 1 nanomaggy
FLUX_UNIT = "nanomaggy"
NATIVE_SIZE = 64  # stamp side (pixels) of the cached raw cube

WAVELENGTH = (4686.0, 6166.0, 7480.0)  # Angstrom, effective g, r, i (Fukugita et al. 1996)
SKY_MAG = (21.9, 20.9, 20.2)  # mag / arcsec^2, dark SDSS sky in g, r, i
ELECTRONS_PER_NMGY = (1000.0, 1000.0, 750.0)  # 53.9 s SDSS exposure, approximate
R_MAG_LIMITS = (14.0, 17.77)  # main-sample r-band limits (Strauss et al. 2002)
MU50_LIMIT = 24.5  # mag / arcsec^2 (Strauss et al. 2002)
HLR_LIMITS = (0.3, 3.5)  # arcsec; larger galaxies do not fit a 25 arcsec stamp
NEIGHBOUR_R_LIMITS = (15.0, 19.5)
NEIGHBOUR_RATE = 0.15  # fraction of stamps with a neighbouring galaxy
STAR_RATE = 0.35  # mean number of foreground stars per stamp (Poisson)
DEV_TRUNCATION = 8.0  # bulge profile cut at this many bulge half-light radii

H0, OMEGA_M = 70.0, 0.3
M_STAR = -20.44 + 5.0 * math.log10(H0 / 100.0)  # Blanton et al. 2003, for h = 0.7
ALPHA = -1.05

REFERENCES = [
    "Blanton et al. 2003, ApJ 592, 819 (r-band luminosity function of the SDSS main sample)",
    "Blanton et al. 2003, ApJ 594, 186 (broadband optical properties, colour bimodality)",
    "Strateva et al. 2001, AJ 122, 1861 (colour separation of galaxy types)",
    "Baldry et al. 2004, ApJ 600, 681 (bimodal colour-magnitude distribution)",
    "Shen et al. 2003, MNRAS 343, 978 (size distribution of SDSS galaxies)",
    "Strauss et al. 2002, AJ 124, 1810 (main galaxy sample selection, redshift distribution)",
    "Fukugita et al. 1996, AJ 111, 1748 (SDSS photometric system)",
    "Rowe et al. 2015, Astronomy and Computing 10, 121 (GalSim)",
    "Lupton, Gunn & Szalay 1999, AJ 118, 1406 (asinh stretch)",
]


# --------------------------------------------------------------------------------------------
# Cosmology and population relations


@dataclass(frozen=True)
class _Tables:
    z: np.ndarray  # redshift grid from 0 to Z_MAX
    volume_z: np.ndarray  # redshift grid from Z_MIN to Z_MAX
    volume_cdf: np.ndarray  # cumulative comoving volume over ``volume_z``, 0 to 1
    dist_mod: np.ndarray  # distance modulus (mag)
    kpc_per_arcsec: np.ndarray  # proper transverse scale
    mag: np.ndarray  # absolute-magnitude grid
    lf_cdf: np.ndarray  # cumulative Schechter function over ``mag``


Z_MIN, Z_MAX = 0.005, 0.35
M_LIMITS = (-23.5, -16.0)


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    """Distance and luminosity-function look-up tables (computed once per process)."""
    z = np.linspace(0.0, Z_MAX, 3501)
    inv_e = 1.0 / np.sqrt(OMEGA_M * (1 + z) ** 3 + 1 - OMEGA_M)
    hubble_mpc = 299792.458 / H0
    dc = hubble_mpc * np.concatenate([[0.0], np.cumsum((inv_e[1:] + inv_e[:-1]) / 2 * np.diff(z))])
    dvdz = dc**2 * inv_e
    cdf = np.concatenate([[0.0], np.cumsum((dvdz[1:] + dvdz[:-1]) / 2 * np.diff(z))])
    keep = z >= Z_MIN - 1e-9  # (grid round-off)
    volume_cdf = (cdf[keep] - cdf[keep][0]) / (cdf[-1] - cdf[keep][0])
    with np.errstate(divide="ignore"):
        dist_mod = 5.0 * np.log10(np.maximum(dc * (1 + z), 1e-9)) + 25.0
    kpc_per_arcsec = dc / (1 + z) * 1e3 * math.pi / (180.0 * 3600.0)
    mag = np.linspace(*M_LIMITS, 1501)
    x = 10.0 ** (0.4 * (M_STAR - mag))
    phi = x ** (ALPHA + 1) * np.exp(-x)
    lf = np.concatenate([[0.0], np.cumsum((phi[1:] + phi[:-1]) / 2 * np.diff(mag))])
    return _Tables(z, z[keep], volume_cdf, dist_mod, kpc_per_arcsec, mag, lf / lf[-1])


def red_fraction(abs_mag_r: np.ndarray) -> np.ndarray:
    """Probability that a galaxy of absolute r magnitude ``abs_mag_r`` is on the red sequence.

    A logistic step from 0.15 (faint) to 0.85 (bright) centred on ``M_r = -21.0``, following the
    trend of Baldry et al. 2004 (their red fraction rises with luminosity).
    """
    return 0.15 + 0.70 / (1.0 + np.exp((np.asarray(abs_mag_r) + 21.0) / 0.6))


def _k_correction(z: np.ndarray, red: np.ndarray) -> np.ndarray:
    """Approximate r-band K-correction (mag): linear in z, steeper for red galaxies."""
    return np.where(red, 1.0, 0.4) * z


def _shen_log_r50(abs_mag_r: np.ndarray, red: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean log10 half-light radius (kpc) and scatter of ln R50 (Shen et al. 2003, h = 0.7).

    Early types: ``log R = -0.4 a M + b`` with a = 0.65, b = -5.06. Late types:
    ``log R = -0.4 alpha M + (beta - alpha) log(1 + 10^(-0.4 (M - M0))) + gamma`` with
    alpha = 0.21, beta = 0.53, gamma = -1.31, M0 = -20.52. Scatter
    ``sigma_lnR = s2 + (s1 - s2) / (1 + 10^(-0.8 (M - M0)))`` with s1 = 0.48, s2 = 0.25.
    """
    m = np.asarray(abs_mag_r, np.float64)
    early = -0.4 * 0.65 * m - 5.06
    late = -0.4 * 0.21 * m + (0.53 - 0.21) * np.log10(1 + 10 ** (-0.4 * (m + 20.52))) - 1.31
    sigma_ln = 0.25 + (0.48 - 0.25) / (1 + 10 ** (-0.8 * (m + 20.52)))
    return np.where(red, early, late), sigma_ln


def _colours(rng: np.random.Generator, *, red: bool, z: float, abs_mag_r: float) -> tuple[float, float]:
    """Observed-frame (g - r, r - i) of a red-sequence or blue-cloud galaxy at redshift ``z``.

    Red sequence: ``g-r = 0.72 + 1.6 z - 0.02 (M+21)``, scatter 0.05;
    ``r-i = 0.36 + 0.45 z``, scatter 0.03. Blue cloud: ``g-r = 0.45 + 0.8 z - 0.05 (M+20.5)``,
    scatter 0.10; ``r-i = 0.25 + 0.3 z``, scatter 0.06 (approximate readings of the SDSS
    colour distributions of Blanton et al. 2003b and Strateva et al. 2001).
    """
    if red:
        gr = 0.72 + 1.6 * z - 0.02 * (abs_mag_r + 21.0) + rng.normal(0.0, 0.05)
        ri = 0.36 + 0.45 * z + rng.normal(0.0, 0.03)
    else:
        gr = 0.45 + 0.8 * z - 0.05 * (abs_mag_r + 20.5) + rng.normal(0.0, 0.10)
        ri = 0.25 + 0.3 * z + rng.normal(0.0, 0.06)
    return float(np.clip(gr, 0.0, 1.4)), float(np.clip(ri, -0.1, 0.8))


# --------------------------------------------------------------------------------------------
# Parameters of one stamp


@dataclass(frozen=True)
class GalaxyParams:
    """Intrinsic (pre-seeing) description of one galaxy.

    Attributes
    ----------
    population : {"red", "blue"}
        Red sequence (bulge-dominated) or blue cloud (disk-dominated, with knots).
    redshift : float
    abs_mag_r : float
        Rest-frame r absolute magnitude (AB, H0 = 70).
    mag : tuple of float
        Apparent AB magnitudes (g, r, i) of the whole galaxy.
    hlr : float
        Circularised half-light radius sqrt(a b) of the r-band light, arcsec.
    bulge_frac : tuple of float
        Bulge-to-total flux ratio in g, r, i (the bulge is redder than the disk).
    hlr_bulge, hlr_disk : float
        Circularised half-light radii of the components, arcsec.
    q_bulge, q_disk : float
        Axis ratios b/a of the components.
    pa : float
        Position angle of the major axis, degrees counter-clockwise from the +x (column) axis.
    knot_frac : tuple of float
        Fraction of the disk light (g, r, i) in star-forming knots.
    n_knots : int
    knot_seed : int
        Seed of the knot positions (the same knots in every band).
    """

    population: str
    redshift: float
    abs_mag_r: float
    mag: tuple[float, float, float]
    hlr: float
    bulge_frac: tuple[float, float, float]
    hlr_bulge: float
    hlr_disk: float
    q_bulge: float
    q_disk: float
    pa: float
    knot_frac: tuple[float, float, float]
    n_knots: int
    knot_seed: int

    @property
    def flux(self) -> tuple[float, float, float]:
        """Total flux per band (g, r, i), nanomaggies."""
        return tuple(mag_to_flux(m) for m in self.mag)

    @property
    def ellipticity(self) -> float:
        """``1 - b/a`` of the r-band light (component axis ratios weighted by r-band flux)."""
        bt = self.bulge_frac[1]
        return 1.0 - (bt * self.q_bulge + (1.0 - bt) * self.q_disk)


@dataclass(frozen=True)
class StarParams:
    """A foreground star: position (arcsec from the stamp centre, +x right, +y up), g, r, i mags."""

    x: float
    y: float
    mag: tuple[float, float, float]


@dataclass(frozen=True)
class StampParams:
    """Everything needed to draw stamp ``index`` of ``seed``.

    Attributes
    ----------
    seed, index : int
    galaxy : GalaxyParams
        The main galaxy, centred on the stamp up to ``offset``.
    offset : tuple of float
        Sub-pixel shift (dx, dy) of the main galaxy from the stamp centre, pixels.
    psf_fwhm : float
        r-band seeing FWHM, arcsec; band b has ``psf_fwhm * (lambda_b / lambda_r) ** -0.2``.
    sky : tuple of float
        Sky level per band (g, r, i) subtracted from the image, nanomaggies per pixel.
    neighbour : GalaxyParams or None
    neighbour_pos : tuple of float or None
        Neighbour centre, arcsec from the stamp centre (+x right, +y up).
    stars : tuple of StarParams
    """

    seed: int
    index: int
    galaxy: GalaxyParams
    offset: tuple[float, float]
    psf_fwhm: float
    sky: tuple[float, float, float]
    neighbour: GalaxyParams | None
    neighbour_pos: tuple[float, float] | None
    stars: tuple[StarParams, ...]

    def psf_fwhm_band(self, band: int) -> float:
        """Seeing FWHM (arcsec) in band ``band`` (0 = g, 1 = r, 2 = i)."""
        return self.psf_fwhm * (WAVELENGTH[band] / WAVELENGTH[1]) ** -0.2


def mag_to_flux(mag):
    """AB magnitude to flux in nanomaggies (zero point 22.5); float in, float out."""
    flux = 10.0 ** (-0.4 * (np.asarray(mag, np.float64) - ZERO_POINT))
    return float(flux) if flux.ndim == 0 else flux


def flux_to_mag(flux):
    """Flux in nanomaggies to AB magnitude (zero point 22.5)."""
    return ZERO_POINT - 2.5 * np.log10(flux)


def _streams(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent parameter and noise generators for stamp ``index`` of ``seed``."""
    params_ss, noise_ss = np.random.SeedSequence([seed, index]).spawn(2)
    return np.random.default_rng(params_ss), np.random.default_rng(noise_ss)


def _sample_population(
    rng: np.random.Generator, *, r_limits: tuple[float, float], batch: int = 512
) -> tuple[float, float, bool, float, float]:
    """Draw (z, M_r, red, r mag, R50 arcsec) from the luminosity function in comoving volume,
    keeping the first candidate that passes the selection (rejection sampling)."""
    t = _tables()
    while True:
        z = np.interp(rng.random(batch), t.volume_cdf, t.volume_z)
        abs_mag = np.interp(rng.random(batch), t.lf_cdf, t.mag)
        red = rng.random(batch) < red_fraction(abs_mag)
        r_mag = abs_mag + np.interp(z, t.z, t.dist_mod) + _k_correction(z, red)
        log_r50, sigma_ln = _shen_log_r50(abs_mag, red)
        r50_kpc = 10.0**log_r50 * np.exp(sigma_ln * rng.standard_normal(batch))
        r50 = r50_kpc / np.interp(z, t.z, t.kpc_per_arcsec)
        mu50 = r_mag + 2.5 * np.log10(2 * np.pi * r50**2)
        ok = (
            (r_mag >= r_limits[0])
            & (r_mag <= r_limits[1])
            & (mu50 <= MU50_LIMIT)
            & (r50 >= HLR_LIMITS[0])
            & (r50 <= HLR_LIMITS[1])
        )
        if ok.any():
            k = int(np.argmax(ok))
            return float(z[k]), float(abs_mag[k]), bool(red[k]), float(r_mag[k]), float(r50[k])


def _band_bulge_fractions(bt_r: float) -> tuple[float, float, float]:
    """B/T in g, r, i for an r-band B/T, with the bulge 0.25 mag redder in g-r and 0.1 in r-i."""
    def shifted(dmag: float) -> float:
        b = bt_r * 10 ** (-0.4 * dmag)
        return b / (b + 1.0 - bt_r)

    return (shifted(0.25), bt_r, shifted(-0.10))


@lru_cache(maxsize=1)
def _dev_scale_radius() -> float:
    """Sersic scale radius of a de Vaucouleurs profile truncated at ``DEV_TRUNCATION`` whose
    (truncated) half-light radius is 1 (the profile GalSim draws)."""
    from scipy.optimize import brentq
    from scipy.special import gammainc

    def frac(r0: float) -> float:
        return gammainc(8, (1.0 / r0) ** 0.25) / gammainc(8, (DEV_TRUNCATION / r0) ** 0.25) - 0.5

    return brentq(frac, 1e-6, 1.0)


def _enclosed(r: float, *, bt: float, hlr_bulge: float, hlr_disk: float) -> float:
    """Fraction of a circular bulge + disk's light within radius ``r`` (same units as hlrs)."""
    from scipy.special import gammainc

    r0 = _dev_scale_radius()
    x = min(r / hlr_bulge, DEV_TRUNCATION)
    bulge = gammainc(8, (x / r0) ** 0.25) / gammainc(8, (DEV_TRUNCATION / r0) ** 0.25)
    disk = gammainc(2, 1.6783469900166608 * r / hlr_disk)  # exponential: hlr = 1.678 r_s
    return bt * bulge + (1.0 - bt) * disk


def _component_radii(hlr: float, *, bt: float, ratio: float) -> tuple[float, float]:
    """Bulge and disk half-light radii (bulge = ``ratio`` x disk) giving total half-light ``hlr``."""
    from scipy.optimize import brentq

    def excess(hlr_disk: float) -> float:
        return _enclosed(hlr, bt=bt, hlr_bulge=ratio * hlr_disk, hlr_disk=hlr_disk) - 0.5

    hlr_disk = brentq(excess, hlr * 0.05, hlr * 50.0, xtol=1e-6 * hlr)
    return ratio * hlr_disk, hlr_disk


def _sample_galaxy(rng: np.random.Generator, *, r_limits: tuple[float, float]) -> GalaxyParams:
    z, abs_mag, red, r_mag, hlr = _sample_population(rng, r_limits=r_limits)
    gr, ri = _colours(rng, red=red, z=z, abs_mag_r=abs_mag)
    bt = float(rng.beta(6.0, 3.0) if red else rng.beta(1.2, 6.0))
    cos_i = rng.random()  # random inclination of a disk of intrinsic thickness 0.2
    q_disk = math.sqrt(cos_i**2 + 0.2**2 * (1 - cos_i**2))
    q_bulge = float(np.clip(rng.normal(0.75, 0.15), 0.35, 1.0))
    hlr_bulge, hlr_disk = _component_radii(hlr, bt=bt, ratio=0.6 if red else 0.4)
    if red:
        knot_frac, n_knots = (0.0, 0.0, 0.0), 0
    else:
        fk = float(rng.uniform(0.1, 0.3))
        knot_frac, n_knots = (fk, 0.6 * fk, 0.4 * fk), int(rng.integers(8, 26))
    return GalaxyParams(
        population="red" if red else "blue",
        redshift=z,
        abs_mag_r=abs_mag,
        mag=(r_mag + gr, r_mag, r_mag - ri),
        hlr=hlr,
        bulge_frac=_band_bulge_fractions(bt),
        hlr_bulge=hlr_bulge,
        hlr_disk=hlr_disk,
        q_bulge=q_bulge,
        q_disk=q_disk,
        pa=float(rng.uniform(0.0, 180.0)),
        knot_frac=knot_frac,
        n_knots=n_knots,
        knot_seed=int(rng.integers(1, 2**31 - 1)),
    )


def _sample_star(rng: np.random.Generator, *, half_width: float) -> StarParams:
    """A star at least 3 arcsec from the centre; r in [16, 22] with counts rising as 10^(0.2 r)."""
    while True:
        x, y = rng.uniform(-half_width, half_width, size=2)
        if math.hypot(x, y) >= 3.0:
            break
    u = rng.random()
    a, b = 10 ** (0.2 * 16.0), 10 ** (0.2 * 22.0)
    r = 5.0 * math.log10(a + u * (b - a))
    gr = float(rng.uniform(0.3, 1.4))  # rough stellar-locus colours
    ri = 0.05 + 0.4 * gr
    return StarParams(float(x), float(y), (r + gr, r, r - ri))


def sample_params(seed: int, index: int) -> StampParams:
    """Parameters of stamp ``index`` of the dataset with random seed ``seed``.

    Deterministic: the result depends only on ``(seed, index)``.

    Parameters
    ----------
    seed : int
        Dataset seed (>= 0).
    index : int
        Stamp number (>= 0).

    Returns
    -------
    StampParams
    """
    rng, _ = _streams(seed, index)
    galaxy = _sample_galaxy(rng, r_limits=R_MAG_LIMITS)
    offset = tuple(float(v) for v in rng.uniform(-0.5, 0.5, size=2))
    psf_fwhm = float(np.clip(rng.normal(1.25, 0.12), 1.0, 1.5))
    sky_shift = rng.normal(0.0, 0.15)  # night-to-night sky brightness, mag
    sky = tuple(float(mag_to_flux(m + sky_shift)) * PIXEL_SCALE**2 for m in SKY_MAG)
    neighbour = neighbour_pos = None
    if rng.random() < NEIGHBOUR_RATE:
        neighbour = _sample_galaxy(rng, r_limits=NEIGHBOUR_R_LIMITS)
        sep, angle = rng.uniform(5.0, 12.0), rng.uniform(0.0, 2 * math.pi)
        neighbour_pos = (float(sep * math.cos(angle)), float(sep * math.sin(angle)))
    half_width = NATIVE_SIZE * PIXEL_SCALE / 2
    stars = tuple(_sample_star(rng, half_width=half_width) for _ in range(rng.poisson(STAR_RATE)))
    return StampParams(seed, index, galaxy, offset, psf_fwhm, sky, neighbour, neighbour_pos, stars)


# --------------------------------------------------------------------------------------------
# Drawing


def _galaxy_profile(g: GalaxyParams, band: int):
    """GalSim profile of a galaxy in one band, centred on the origin, before seeing."""
    import galsim

    flux = g.flux[band]
    bt, fk = g.bulge_frac[band], g.knot_frac[band]
    beta = g.pa * galsim.degrees
    bulge = galsim.DeVaucouleurs(half_light_radius=1.0, trunc=DEV_TRUNCATION).dilate(g.hlr_bulge)
    parts = [bulge.shear(q=g.q_bulge, beta=beta).withFlux(flux * bt)]
    disk = galsim.Exponential(half_light_radius=g.hlr_disk)
    parts.append(disk.shear(q=g.q_disk, beta=beta).withFlux(flux * (1 - bt) * (1 - fk)))
    if g.n_knots and fk > 0:
        knots = galsim.RandomKnots(g.n_knots, profile=disk, rng=galsim.BaseDeviate(g.knot_seed))
        parts.append(knots.shear(q=g.q_disk, beta=beta).withFlux(flux * (1 - bt) * fk))
    return galsim.Add(parts)


def _psf(params: StampParams, band: int):
    import galsim

    return galsim.Kolmogorov(fwhm=params.psf_fwhm_band(band))


def _draw(profile, *, size: int, offset=(0.0, 0.0)) -> np.ndarray:
    image = profile.drawImage(nx=size, ny=size, scale=PIXEL_SCALE, offset=offset)
    return image.array.astype(np.float64)


def _render(params: StampParams, *, size: int, extras: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless images (3, size, size) in nanomaggies: the main galaxy, and the rest."""
    import galsim

    main = np.empty((3, size, size))
    rest = np.zeros((3, size, size))
    for b in range(3):
        psf = _psf(params, b)
        main[b] = _draw(galsim.Convolve(_galaxy_profile(params.galaxy, b), psf), size=size, offset=params.offset)
        others = []
        if extras and params.neighbour is not None:
            others.append(_galaxy_profile(params.neighbour, b).shift(*params.neighbour_pos))
        if extras:
            others += [galsim.DeltaFunction(flux=mag_to_flux(s.mag[b])).shift(s.x, s.y) for s in params.stars]
        if others:
            rest[b] = _draw(galsim.Convolve(galsim.Add(others), psf), size=size)
    return main, rest


def _add_noise(image: np.ndarray, sky: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Poisson noise of source + sky electrons; returns the sky-subtracted noisy image."""
    out = np.empty_like(image)
    for b in range(image.shape[0]):
        gain = ELECTRONS_PER_NMGY[b]
        electrons = rng.poisson(np.clip(image[b] + sky[b], 0.0, None) * gain)
        out[b] = electrons / gain - sky[b]
    return out


def draw_galaxy(
    params: StampParams,
    *,
    size: int = NATIVE_SIZE,
    rng: np.random.Generator | None = None,
    noise: bool = True,
    extras: bool = True,
) -> np.ndarray:
    """Draw one stamp.

    Parameters
    ----------
    params : StampParams
        From :func:`sample_params`.
    size : int
        Stamp side, pixels of 0.396 arcsec.
    rng : numpy.random.Generator, optional
        Noise generator; by default the stamp's own noise stream (seeded by ``(seed, index)``),
        which is what :func:`build_sim` uses.
    noise : bool
        Add Poisson sky + source noise (the sky itself is subtracted).
    extras : bool
        Include the neighbour galaxy and the foreground stars.

    Returns
    -------
    ndarray, (3, size, size), float32
        Bands g, r, i; nanomaggies per pixel, sky-subtracted.
    """
    main, rest = _render(params, size=size, extras=extras)
    image = main + rest
    if noise:
        image = _add_noise(image, params.sky, rng if rng is not None else _streams(params.seed, params.index)[1])
    return image.astype(np.float32)


def draw_psf(params: StampParams, *, size: int = NATIVE_SIZE) -> np.ndarray:
    """The stamp's PSF in each band, (3, size, size) float32, each summing to ~1 (centred)."""
    return np.stack([_draw(_psf(params, b), size=size) for b in range(3)]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Truth catalogue

TRUTH_COLUMNS = (
    "id", "x", "y", "population", "redshift", "abs_mag_r",
    "flux_g", "flux_r", "flux_i", "mag_g", "mag_r", "mag_i", "zero_point",
    "hlr_arcsec", "hlr_pix", "ellipticity", "pa_deg", "bulge_frac", "n_knots",
    "psf_fwhm", "sky_g", "sky_r", "sky_i", "has_neighbour", "n_stars", "frac_in_stamp",
)  # fmt: skip


def truth_row(params: StampParams, *, size: int, frac_in_stamp: float) -> dict:
    """One truth-catalogue row (see :data:`TRUTH_COLUMNS` and the dataset card)."""
    g = params.galaxy
    row = {
        "id": params.index,
        "x": (size - 1) / 2 + params.offset[0],
        "y": (size - 1) / 2 + params.offset[1],
        "population": g.population,
        "redshift": g.redshift,
        "abs_mag_r": g.abs_mag_r,
    }
    for b, name in enumerate(BANDS):
        row[f"flux_{name}"] = g.flux[b]
    for b, name in enumerate(BANDS):
        row[f"mag_{name}"] = g.mag[b]
    row.update(
        zero_point=ZERO_POINT,
        hlr_arcsec=g.hlr,
        hlr_pix=g.hlr / PIXEL_SCALE,
        ellipticity=g.ellipticity,
        pa_deg=g.pa,
        bulge_frac=g.bulge_frac[1],
        n_knots=g.n_knots,
        psf_fwhm=params.psf_fwhm,
        sky_g=params.sky[0],
        sky_r=params.sky[1],
        sky_i=params.sky[2],
        has_neighbour=params.neighbour is not None,
        n_stars=len(params.stars),
        frac_in_stamp=frac_in_stamp,
    )
    return row


_UNITS = {"x": "pix", "y": "pix", "hlr_arcsec": "arcsec", "hlr_pix": "pix", "pa_deg": "deg",
          "psf_fwhm": "arcsec", "abs_mag_r": "mag", "mag_g": "mag", "mag_r": "mag",
          "mag_i": "mag", "zero_point": "mag"}  # fmt: skip


def truth_table(rows: list[dict]):
    """Rows from :func:`truth_row` as an :class:`astropy.table.Table` with units and meta.

    Fluxes and sky levels are in nanomaggies (not a FITS unit, so named in ``meta['FLUXUNIT']``).
    """
    from astropy.table import Table

    table = Table(rows=[[r[c] for c in TRUTH_COLUMNS] for r in rows], names=TRUTH_COLUMNS)
    for name, unit in _UNITS.items():
        table[name].unit = unit
    table.meta.update(
        ZP=ZERO_POINT,
        FLUXUNIT=FLUX_UNIT,
        MAGSYS="AB",
        BANDS=",".join(BANDS),
        PIXSCALE=PIXEL_SCALE,
        ECONV="ellipticity = 1 - b/a (r-band, pre-seeing)",
        PACONV="pa_deg: major axis, deg CCW from +x",
        HLRCONV="hlr: circularised sqrt(ab), r-band, pre-seeing",
    )
    return table


# --------------------------------------------------------------------------------------------
# Building the FITS cube


def _limit_threads() -> None:
    """Worker initialiser: one thread per process, set before GalSim is imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import galsim  # noqa: F401  (import here, after the limits, not at module import)


def _simulate_chunk(task: tuple[int, int, int, int, bool]) -> tuple[int, np.ndarray, list[dict]]:
    """Simulate stamps ``start .. stop-1``: returns (start, cube (n, 3, size, size), rows)."""
    seed, start, stop, size, noiseless = task
    cube = np.empty((stop - start, 3, size, size), np.float32)
    rows = []
    for k, index in enumerate(range(start, stop)):
        params = sample_params(seed, index)
        main, rest = _render(params, size=size)
        image = main + rest
        if not noiseless:
            image = _add_noise(image, params.sky, _streams(seed, index)[1])
        cube[k] = image
        frac = float(main[1].sum() / params.galaxy.flux[1])
        rows.append(truth_row(params, size=size, frac_in_stamp=frac))
    return start, cube, rows


def _check_int(name: str, value, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"sim: {name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise DataError(f"sim: {name} must be {bound}, got {value}")
    return int(value)


def _chunks(count: int, workers: int) -> list[tuple[int, int]]:
    size = max(1, min(50, math.ceil(count / (4 * workers))))
    return [(a, min(a + size, count)) for a in range(0, count, size)]


def _header(*, count: int, seed: int, size: int, noiseless: bool):
    from astropy.io import fits
    import galsim

    h = fits.Header()
    h["BUNIT"] = (FLUX_UNIT, "sky-subtracted flux per pixel")
    h["BANDS"] = (",".join(BANDS), "band order along axis 3 (numpy axis 1)")
    h["PIXSCALE"] = (PIXEL_SCALE, "arcsec / pixel")
    h["ZP"] = (ZERO_POINT, "AB mag = ZP - 2.5 log10(flux)")
    h["MAGSYS"] = ("AB", "magnitude system")
    h["SEED"] = (seed, "simulation seed; stamp i uses streams (SEED, i)")
    h["COUNT"] = (count, "number of stamps (numpy axis 0)")
    h["STAMPSZ"] = (size, "stamp side, pixels")
    h["NOISELES"] = (noiseless, "True: no noise added")
    h["PSFMODEL"] = ("Kolmogorov", "seeing per stamp: TRUTH psf_fwhm (r band)")
    h["NOISEMOD"] = ("Poisson", "source + sky electrons, then sky subtracted")
    for b, name in enumerate(BANDS):
        h[f"SKYMAG_{name.upper()}"] = (SKY_MAG[b], f"mean {name} sky, mag/arcsec2 (+-0.15 per stamp)")
        h[f"EPNMGY_{name.upper()}"] = (ELECTRONS_PER_NMGY[b], f"{name} electrons per nanomaggy")
    h["GENERATR"] = ("galaxy_core.data.sim", "generator module")
    h["SIMVER"] = (VERSION, "simulation version")
    h["GALSIMV"] = (galsim.__version__, "GalSim version")
    h["COMMENT"] = "Data axes (numpy order): (stamp, band, y, x). Truth catalogue in HDU TRUTH."
    h["COMMENT"] = "Simulated SDSS-like galaxies; see docs/datasets/sim.md for the model."
    return h


def build_sim(
    path: str | os.PathLike,
    *,
    count: int = 10_000,
    seed: int = 0,
    size: int = NATIVE_SIZE,
    workers: int = 2,
    progress: Progress = True,
    noiseless: bool = False,
) -> Path:
    """Simulate ``count`` stamps and write them, with their truth catalogue, to one FITS file.

    The primary HDU is the cube ``(count, 3, size, size)`` float32 in nanomaggies per pixel
    (sky-subtracted; bands g, r, i; 0.396 arcsec pixels; zero point 22.5); the BinTableHDU
    ``TRUTH`` has one row per stamp. The file is written atomically.

    Parameters
    ----------
    path : path
        Output FITS file.
    count : int
        Number of stamps.
    seed : int
        Random seed; stamp ``i`` depends only on ``(seed, i)``.
    size : int
        Stamp side in pixels (even, 16..512).
    workers : int
        Worker processes (started with ``spawn``); 1 simulates in this process.
    progress : bool or callable
        Show a tqdm progress bar over galaxies; or a callable ``progress(done, total)`` called as work
        completes (:mod:`galaxy_core.progress`).
    noiseless : bool
        Skip the noise (stars and neighbours are still drawn).

    Returns
    -------
    Path
        ``path``.
    """
    from astropy.io import fits
    from galaxy_core.io.atomic import atomic_open

    count = _check_int("count", count, low=1)
    seed = _check_int("seed", seed, low=0, high=2**63 - 1)
    size = _check_int("size", size, low=16, high=512)
    workers = _check_int("workers", workers, low=1, high=256)
    if size % 2:
        raise DataError(f"sim: size must be even, got {size}")
    cube = np.empty((count, 3, size, size), np.float32)  # (N, C, H, W) nanomaggies
    rows: list[dict] = [{}] * count
    tasks = [(seed, a, b, size, bool(noiseless)) for a, b in _chunks(count, workers)]
    with ProgressBar(progress, total=count, unit="gal", desc="simulating galaxies") as bar:
        for start, chunk, chunk_rows in _run_tasks(tasks, workers=workers):
            cube[start : start + len(chunk)] = chunk
            rows[start : start + len(chunk)] = chunk_rows
            bar.update(len(chunk))
    primary = fits.PrimaryHDU(cube, header=_header(count=count, seed=seed, size=size, noiseless=noiseless))
    truth = fits.table_to_hdu(truth_table(rows))
    truth.name = "TRUTH"
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fits.HDUList([primary, truth]).writeto(f)
    return path


def _run_tasks(tasks: list, *, workers: int):
    """Yield chunk results in order, in this process or in ``spawn`` workers (never fork:
    forking after GalSim has drawn an image can deadlock the children)."""
    if workers == 1 or len(tasks) == 1:
        yield from map(_simulate_chunk, tasks)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes=min(workers, len(tasks)), initializer=_limit_threads) as pool:
        yield from pool.imap(_simulate_chunk, tasks)


# --------------------------------------------------------------------------------------------
# Preparing for training


def raw_path(*, count: int, seed: int, size: int = NATIVE_SIZE) -> Path:
    """Where the raw FITS cube of ``(count, seed, size)`` is cached."""
    from galaxy_core.paths import cache_dir

    return cache_dir() / "sim" / f"sim-{count}-seed{seed}-{size}px.fits"


def _raw_is_current(path: Path) -> bool:
    from astropy.io import fits

    try:
        return fits.getheader(path, 0).get("SIMVER") == VERSION
    except (OSError, ValueError):
        return False


def _default_workers(count: int) -> int:
    """Worker processes for a build: one per usable CPU (8 at most), 1 (in-process) below 400."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, 8, count // 200))


def _crop_box(crop: float) -> tuple[int, int]:
    """(first kept pixel, kept side) of the native stamp for a centre-crop fraction."""
    from galaxy_core.data.transforms import centre_crop_box

    top, _, side = centre_crop_box((NATIVE_SIZE, NATIVE_SIZE), crop)
    return top, side


def _resample(flux: np.ndarray, *, resolution: int, crop: float) -> np.ndarray:
    """Centre-crop ``(n, C, S, S)`` to ``crop`` of its side and resize to ``resolution``,
    keeping total flux (values become nanomaggies per *output* pixel). float64 out."""
    from galaxy_core.data.transforms import centre_crop
    from galaxy_core.io.units import resample_flux

    return resample_flux(centre_crop(np.asarray(flux), crop), resolution)


def _output_pixel_scale(*, resolution: int, crop: float) -> float:
    return PIXEL_SCALE * _crop_box(crop)[1] / resolution


def _rescale_catalog(table, *, resolution: int, crop: float):
    """Truth table with pixel quantities (x, y, hlr_pix) in the prepared images' pixels."""
    lo, keep = _crop_box(crop)
    factor = resolution / keep
    out = table.copy()
    out["x"] = (out["x"] - lo + 0.5) * factor - 0.5
    out["y"] = (out["y"] - lo + 0.5) * factor - 0.5
    out["hlr_pix"] = out["hlr_pix"] * factor
    out.meta["PIXSCALE"] = _output_pixel_scale(resolution=resolution, crop=crop)
    return out


def prepare_sim(
    *,
    resolution: int = 64,
    crop: float = 1.0,
    count: int = 10_000,
    seed: int = 0,
    normalisation: str = "asinh",
    rebuild: bool = False,
    progress: Progress = True,
):
    """The ``sim`` dataset as a :class:`~galaxy_core.data.prepared.PreparedDataset` (cached).

    The raw cube is simulated once at 64 pixels (0.396 arcsec) and cached as
    ``cache_dir()/sim/sim-{count}-seed{seed}-64px.fits``; it is then centre-cropped to ``crop``,
    resized to ``resolution`` (flux-conserving, anti-aliased when shrinking) and stretched to
    [-1, 1].

    Parameters
    ----------
    resolution : int
        Output side, pixels (32, 64, 128 or 256).
    crop : float
        Centre-crop fraction in (0, 1].
    count, seed : int
        Number of galaxies and random seed.
    normalisation : {"asinh", "minmax"}
        Invertible per-band asinh stretch fitted to the data, or per-image min-max (not
        flux-preserving).
    rebuild : bool
        Simulate and prepare again even if cached.
    progress : bool or callable
        Show a progress bar while simulating; or a callable ``progress(done, total)`` called as work
        completes (:mod:`galaxy_core.progress`).

    Returns
    -------
    PreparedDataset
        float16 images (count, 3, resolution, resolution) in [-1, 1], bands g, r, i; the truth
        catalogue as ``catalog`` (pixel columns in output pixels).
    """
    import shutil

    from galaxy_core.data.prepared import cache_key, new_temporary_dir, open_prepared, write_prepared
    from galaxy_core.io.stretch import stretch_into
    from galaxy_core.io.units import FLUX_CONVENTION
    from galaxy_core.paths import cache_dir

    if resolution not in (32, 64, 128, 256):
        raise DataError(f"sim: resolution must be 32, 64, 128 or 256, got {resolution!r}")
    if isinstance(crop, bool) or not isinstance(crop, numbers.Real) or not 0 < crop <= 1:
        raise DataError(f"sim: crop must be in (0, 1], got {crop!r}")
    if normalisation not in ("asinh", "minmax"):
        raise DataError(f"sim: normalisation must be 'asinh' or 'minmax', got {normalisation!r}")
    count = _check_int("count", count, low=1)
    seed = _check_int("seed", seed, low=0, high=2**63 - 1)
    options = {"version": VERSION, "prepare": PREPARE_VERSION, "count": count, "seed": seed,
               "native_size": NATIVE_SIZE,
               "resolution": resolution, "crop": float(crop), "normalisation": normalisation}  # fmt: skip
    key = cache_key({"source": "builtin:sim", **options})
    root = cache_dir() / "prepared" / f"sim-{key}"
    raw = raw_path(count=count, seed=seed)
    if not rebuild and root.exists():
        try:
            ds = open_prepared(root)
            if ds.manifest.get("key") == key:
                return ds
        except DataError:
            pass  # incomplete or corrupt: prepare again
    # astropy only now: a cached dataset opens without it (its import costs seconds in every process)
    from astropy.io import fits
    from astropy.table import Table

    if rebuild or not raw.exists() or not _raw_is_current(raw):
        build_sim(raw, count=count, seed=seed, workers=_default_workers(count), progress=progress)
    with fits.open(raw, memmap=True) as hdul:
        flux = hdul[0].data  # (N, 3, 64, 64) nanomaggies, memory-mapped
        catalog = _rescale_catalog(Table.read(hdul["TRUTH"]), resolution=resolution, crop=crop)
        root.parent.mkdir(parents=True, exist_ok=True)
        scratch = new_temporary_dir(root.parent, "sim-scratch")  # named so a killed run's folder is removed later
        out = None
        try:
            out = np.lib.format.open_memmap(scratch / "images.npy", mode="w+", dtype=np.float16,
                                            shape=(len(flux), 3, resolution, resolution))  # fmt: skip
            stretched = stretch_into(flux, out, normalisation=normalisation, chunk=500,
                                     resample=partial(_resample, resolution=resolution, crop=crop),
                                     progress=progress)
            manifest = {
                "name": "sim",
                "key": key,
                "source": "builtin:sim",
                "channels": list(BANDS),
                "kind": "physical",
                "preprocess": {**options, "resample": "symmetric centre crop, skimage resize "
                               "(bilinear, anti-aliased when shrinking) times the pixel-area ratio",
                               "flux_convention": FLUX_CONVENTION,
                               "stretch_fit_images": stretched.pop("stretch_fit_images")},  # fmt: skip
                **stretched,
                "pixel_scale_arcsec": _output_pixel_scale(resolution=resolution, crop=crop),
                "zero_point": ZERO_POINT,
                "flux_unit": FLUX_UNIT,
                "raw_file": raw.name,
                "references": REFERENCES,
            }
            return write_prepared(root, out, manifest, catalog=catalog, replace=rebuild)
        finally:
            del out  # release the memory map before its folder is removed
            shutil.rmtree(scratch, ignore_errors=True)
