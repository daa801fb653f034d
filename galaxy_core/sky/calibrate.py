"""Calibrations that bring generated galaxies and the composed sky closer to the deep field.

Measured against the real tiles (``docs/families/sky.md``, section "Realism of composed
skies"), these things told composed skies from the field apart, and each has a correction
calibrated on the data (never on the realism scorer); the first three are below, the others
(sources below the catalogue's detection limit, the field's stars) are described at their
functions, and the grid class fractions at :func:`galaxy_core.sky.grids.grid_class_fractions`:

* **sharpness** (:func:`sharpness_transfer`): the generators draw galaxies that are too smooth
  at 2.5–4 px scales (the known spectral bias of up-sampling generators, Durall, Keuper &
  Keuper 2020, "Watch your up-convolution", CVPR). A radial Fourier filter ``T(k)`` with
  ``T(0) = 1`` (total flux kept exactly) gives the model's galaxies the mean flux-normalised
  power spectrum of the real stamps, after removing from the latter the background noise that
  the real stamps carry inside their masks (the composed sky adds its own);
* **pixel intensities** (:func:`pixel_quantiles`): the field is a stretched 8-bit composite, so
  the distribution of a galaxy's pixel values (how peaked its core is) is a property of the
  data's stretch; a monotone map of each pixel's band-mean value, calibrated per model, gives
  the stamps' pixels the real stamps' distribution, the empty pixels around the galaxy
  included, so the area a galaxy covers follows too (colours and the brightness order kept);
* **faint sources** (:class:`FaintSources`): 1289 of the field's detections (74 %) are smaller
  than the 50 pix² the grid catalogue keeps, and the measured background has them masked
  out, so composed skies missed them entirely. They are drawn as elliptical Moffat profiles
  (beta 4, integrated over each pixel; or Gaussians) whose band fluxes, second moments and
  orientation are those of a random small detection of the catalogue, at the catalogue's
  density and uniform positions.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from galaxy_core.io.atomic import cached_arrays
from galaxy_core.metrics.realism import ring_index
from galaxy_core.sky.background import BACKGROUND_VERSION, hdf_background, source_mask
from galaxy_core.sky.stamps import add_stamp, edge_taper, real_galaxy_flux

# --------------------------------------------------------------------------- Fourier helpers


def ring_power(flux: np.ndarray) -> np.ndarray:
    """Mean flux-normalised ring power of band-summed flux images.

    Parameters
    ----------
    flux : array (n, 3, S, S), float

    Returns
    -------
    ndarray (K,), float64
        ``mean_i |FFT(f_i)|^2`` averaged over the ring ``round(|k|) = k`` for ``k = 0 .. K-1``
        (``K = floor(S / sqrt 2) + 1``), divided by ``mean_i f_i.sum()^2`` (so ``[0] == 1``
        when every stamp has the same total).
    """
    f = np.asarray(flux, np.float64).sum(axis=1)
    spec = np.fft.fft2(f)
    p2 = (np.abs(spec) ** 2).mean(axis=0)
    kr = ring_index(f.shape[-1])
    ring = np.bincount(kr.ravel(), p2.ravel()) / np.bincount(kr.ravel())
    return ring / np.mean(np.abs(spec[:, 0, 0]) ** 2)


def apply_transfer(flux: np.ndarray, transfer: np.ndarray) -> np.ndarray:
    """Filter (n, 3, S, S) stamps with the radial transfer function ``transfer[k]`` (periodic
    FFT filter; with ``transfer[0] == 1`` every band's total is kept exactly)."""
    t = np.asarray(transfer, np.float64)[np.minimum(ring_index(flux.shape[-1]), len(transfer) - 1)]
    return np.fft.ifft2(np.fft.fft2(np.asarray(flux, np.float64)) * t).real.astype(np.float32)


# --------------------------------------------------------------------------- real-stamp references


@functools.lru_cache(maxsize=4)
def real_stamp_reference(*, resolution: int = 32, neighbours: str = "keep") -> dict:
    """What the calibrations aim at, measured once on the real ``hdf`` stamps.

    ``neighbours``: the stamps as cut (``"keep"``) or with other sources replaced by sky
    (``"sky"``; :func:`galaxy_core.data.hdf.prepare_hdf`), as the model was trained on.

    Returns
    -------
    dict
        ``power``: :func:`ring_power` of the stamps' flux images, each stamp's border median
        taken off as a generator's patch is measured (:func:`~galaxy_core.sky.stamps.
        real_galaxy_flux` with ``sky="border"``: a comparison of shape, made alike on both
        sides); ``noise_power``: the same normalisation applied to draws of the measured
        background noise seen through each stamp's own galaxy mask and edge taper (the noise a
        real stamp carries on top of its galaxy; fixed seed 0); ``pixels``: 513 quantiles of the
        band-mean value of all the stamps' pixels above the field's sky level
        (:func:`pixel_quantiles`; field units; ``sky="level"``: the target is the galaxies' true
        brightness, which a border median, holding their wings, would dim).
    """

    flux = real_galaxy_flux(resolution, neighbours, sky="border")  # (n, 3, S, S)
    bg = hdf_background()
    rng = np.random.default_rng(0)
    level = np.asarray(bg.level, np.float32)[:, None, None]
    mask = (np.abs(flux).sum(axis=1) > 0)[:, None] * edge_taper(resolution)
    noise = np.stack([bg.draw((resolution, resolution), rng) - level for _ in range(len(flux))]) * mask
    totals = flux.sum(axis=(1, 2, 3), dtype=np.float64)
    spec_n = np.fft.fft2(noise.sum(axis=1).astype(np.float64))
    kr = ring_index(resolution)
    noise_ring = np.bincount(kr.ravel(), (np.abs(spec_n) ** 2).mean(axis=0).ravel()) / np.bincount(kr.ravel())
    return {"power": ring_power(flux), "noise_power": noise_ring / np.mean(totals**2),
            "pixels": pixel_quantiles(real_galaxy_flux(resolution, neighbours, sky="level"))}


def sharpness_transfer(model_flux: np.ndarray, *, resolution: int = 32, neighbours: str = "keep",
                       floor: float = 0.05, max_gain: float = 3.0) -> np.ndarray:
    """Radial transfer function that gives model galaxies the real stamps' power spectrum.

    ``T(k) = sqrt(max(P_real(k) - P_noise(k), floor P_real(k)) / P_model(k))``, ``T(0) = 1``,
    clipped to ``[0, max_gain]`` (:func:`real_stamp_reference` for ``P_real`` and
    ``P_noise``; ``P_model`` = :func:`ring_power` of ``model_flux``).

    Parameters
    ----------
    model_flux : array (n, 3, S, S), float
        Flux images of model galaxies (a calibration sample).

    Returns
    -------
    ndarray (K,), float64
        ``T[k]`` for ring ``k`` (cycles per stamp).
    """
    ref = real_stamp_reference(resolution=resolution, neighbours=neighbours)
    target = np.maximum(ref["power"] - ref["noise_power"], floor * ref["power"])
    t = np.sqrt(target / np.maximum(ring_power(model_flux), 1e-30))
    t[0] = 1.0
    return np.clip(t, 0.0, max_gain)


def pixel_quantiles(flux: np.ndarray, *, n: int = 513) -> np.ndarray:
    """``n`` quantiles (probabilities ``linspace(0, 1, n)``) of the band-mean value of every
    pixel of (m, 3, S, S) flux images, the zeros outside the galaxy masks included (so the
    quantiles also describe how many pixels a galaxy covers)."""
    lum = np.asarray(flux, np.float64).mean(axis=1)
    return np.quantile(lum, np.linspace(0.0, 1.0, n))


def map_pixels(flux: np.ndarray, model_q: np.ndarray, real_q: np.ndarray) -> np.ndarray:
    """Monotone map of every positive pixel's band mean from the model's quantiles onto the
    real ones (:func:`pixel_quantiles`); the three bands of a pixel are scaled by the same
    factor (its colour is kept). A model whose galaxies cover more pixels than the real ones
    has its faintest galaxy pixels mapped to 0. Pixels with band mean <= 0 are left as they
    are. (n, 3, S, S) float32 in and out."""
    f = np.asarray(flux, np.float32)
    lum = f.mean(axis=1, keepdims=True)
    p = np.linspace(0.0, 1.0, len(model_q))
    target = np.interp(np.interp(lum, model_q, p), p, real_q)
    ratio = np.where(lum > 0, np.maximum(target, 0.0) / np.maximum(lum, 1e-12), 1.0)
    return (f * ratio).astype(np.float32)


# --------------------------------------------------------------------------- faint sources


def small_detections(cat, max_area: float = 50.0) -> np.ndarray:
    """(n,) bool: the rows of the ``hdf`` catalogue ``cat`` that are the field's small detections,
    segment area below ``max_area`` pix² (the grid catalogue's cut) and not stars, spike fragments
    or cut by the border (:func:`faint_catalogue`)."""
    return (np.asarray(cat["area"]) < max_area) & ~np.isin(np.asarray(cat["reject"]).astype(str),
                                                           ["star", "near_star", "border"])


@functools.lru_cache(maxsize=1)
def faint_catalogue(*, max_area: float = 50.0) -> dict:
    """Parameters of the field's small detections: not stars, spike fragments or cut by the
    border, segment area below ``max_area`` pix² (the grid catalogue's cut).

    Returns
    -------
    dict
        ``flux`` (m, 3) band fluxes (field units, clipped at 0), ``a``, ``b`` (m,) 1-sigma
        axes (pix), ``theta`` (m,) major-axis angle (rad), ``density`` (sources per pixel of
        the field).
    """
    from galaxy_core.data.hdf import hdf_catalog, hdf_field

    cat = hdf_catalog()
    keep = small_detections(cat, max_area)
    t = cat[keep]
    h, w = hdf_field().shape[:2]
    return {"flux": np.clip(np.column_stack([t["flux_r"], t["flux_g"], t["flux_b"]]).astype(np.float64), 0, None),
            "a": np.asarray(t["semimajor_axis"], np.float64), "b": np.asarray(t["semiminor_axis"], np.float64),
            "theta": np.deg2rad(np.asarray(t["orientation"], np.float64)), "density": float(keep.sum()) / (h * w)}


TRUNCATION_RANGE = (0.05, 0.7)  # isophote / peak ratios accepted by subcatalogue_sources


def truncated_moment_fraction(f: np.ndarray) -> np.ndarray:
    """Second moment of a 2-D Gaussian measured only inside the isophote at ``f`` times its
    peak, as a fraction of the full one.

    With ``u = r^2 / (2 sigma^2)`` the isophote is at ``u = ln(1 / f)`` and the profile-weighted
    mean of ``x^2`` inside it is ``sigma^2 (1 - f (1 + ln(1 / f))) / (1 - f)`` (integrate
    ``u e^-u`` and ``e^-u`` from 0 to ``ln(1 / f)``). ``f`` in (0, 1) -> fraction in (0, 1);
    it tends to 1 as ``f -> 0`` (nothing cut) and to 0 as ``f -> 1`` (only the peak left).
    """
    f = np.asarray(f, np.float64)
    return (1.0 - f * (1.0 + np.log(1.0 / f))) / (1.0 - f)


@functools.lru_cache(maxsize=1)
def subcatalogue_sources() -> dict:
    """Parameters of the field's sources below the catalogue's detection limit.

    The background model (:func:`~galaxy_core.sky.background.hdf_background`) is measured on the
    pixels outside :func:`~galaxy_core.sky.background.source_mask` (1.5 sigma, 5 pixels), a lower
    threshold than the catalogue's, so the connected parts of that mask (before growing) that
    hold no catalogue centroid are sources that neither the background model nor the catalogue
    contain: 1250 in the field, 5-12 pix² each, while the measured background noise itself,
    drawn over a field-sized area and masked the same way, gives only a few dozen such parts.

    Returns
    -------
    dict
        As :func:`faint_catalogue`: ``flux`` (m, 3) band sums of the field minus the background
        level over each part (clipped at 0), ``a``, ``b`` (m,) 1-sigma axes and ``theta`` (m,)
        major-axis angle (rad) from the flux-weighted second moments of the part, ``density``
        (parts per pixel of the field). The moments are taken only inside the part, i.e.
        inside an isophote, which makes a source look more compact than it is; each is divided
        by :func:`truncated_moment_fraction` of the part's lowest-to-highest pixel ratio
        (clipped to :data:`TRUNCATION_RANGE`; median axes 0.96 and 0.70 px instead of 0.75 and
        0.56).

    Measured once per machine: kept in the cache (``cache_dir()/sky``, keyed by
    :data:`SUBCATALOGUE_VERSION`, the background's version and the field's detection), so a new
    process reads it instead of masking the whole field again (about 4 s).
    """
    from galaxy_core.data.hdf import detection_key
    from galaxy_core.paths import cache_dir

    name = f"{SUBCATALOGUE_VERSION}-{BACKGROUND_VERSION}-detection-{detection_key()}".replace("/", "-")
    keys = ("flux", "a", "b", "theta", "density")
    z = cached_arrays(cache_dir() / "sky" / f"{name}.npz", _measure_subcatalogue, keys=keys)
    return {k: (float(z[k]) if k == "density" else np.asarray(z[k], np.float64)) for k in keys}


SUBCATALOGUE_VERSION = "subcatalogue/1"  # bump when subcatalogue_sources' measurement changes


def _measure_subcatalogue() -> dict:
    from scipy import ndimage

    from galaxy_core.data.hdf import hdf_catalog, hdf_field

    rgb = hdf_field().astype(np.float64) / 255.0
    h, w = rgb.shape[:2]
    lab, n = ndimage.label(source_mask(rgb, grow=0))
    cat = hdf_catalog()
    cx = np.clip(np.rint(np.asarray(cat["x"], float)).astype(int), 0, w - 1)
    cy = np.clip(np.rint(np.asarray(cat["y"], float)).astype(int), 0, h - 1)
    ids = np.setdiff1d(np.arange(1, n + 1), lab[cy, cx])
    excess = rgb - np.asarray(hdf_background().level)
    band = np.column_stack([ndimage.sum(excess[..., c], lab, ids) for c in range(3)])
    wgt = np.clip(excess.sum(axis=-1), 0.0, None)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    terms = {"w": wgt, "x": wgt * xx, "y": wgt * yy, "xx": wgt * xx * xx, "yy": wgt * yy * yy, "xy": wgt * xx * yy}
    m = {k: ndimage.sum(v, lab, ids) for k, v in terms.items()}
    tot = np.maximum(m["w"], 1e-12)
    mx, my = m["x"] / tot, m["y"] / tot
    sxx, syy, sxy = m["xx"] / tot - mx**2, m["yy"] / tot - my**2, m["xy"] / tot - mx * my
    # moments inside an isophote underestimate a Gaussian's: undo the truncation (see docstring)
    lum = excess.sum(axis=-1)
    lo, hi = np.asarray(ndimage.minimum(lum, lab, ids)), np.asarray(ndimage.maximum(lum, lab, ids))
    f = np.clip(lo / np.maximum(hi, 1e-12), *TRUNCATION_RANGE)
    g = truncated_moment_fraction(f)
    sxx, syy, sxy = sxx / g, syy / g, sxy / g
    half_sum, half_diff = (sxx + syy) / 2, np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
    return {"flux": np.clip(band, 0, None), "a": np.sqrt(np.clip(half_sum + half_diff, 0, None)),
            "b": np.sqrt(np.clip(half_sum - half_diff, 0, None)), "theta": 0.5 * np.arctan2(2 * sxy, sxx - syy),
            "density": len(ids) / (h * w)}


FAINT_PROFILES = ("moffat", "gaussian")  # FaintSources(profile=...), the sky config's faint_profile
FAINT_STACK_SIDE = 15  # px, the cut-outs faint_source_transfer stacks
FAINT_TRANSFER_VERSION = "faint-transfer/1"  # bump when faint_source_transfer or FaintSources' profiles change


def _stack_faint(rgb01: np.ndarray, keep) -> tuple[np.ndarray, int]:
    """Flux-normalised mean 15 px cut-out of an image's small sources, measured as the field's
    faint sources are found: the connected parts of :func:`~galaxy_core.sky.background.source_mask`
    (1.5 sigma, ungrown), centred on each part's flux-weighted centroid (to the nearest pixel),
    the part's band-sum excess over the sky level as its flux, other parts masked out, the
    border median of the stack taken off. ``keep(lab, ids, area) -> bool (n,)`` picks the parts
    stacked. Returns the (15, 15) stack and the number of sources in it."""
    from scipy import ndimage

    s, r = FAINT_STACK_SIDE, FAINT_STACK_SIDE // 2
    h, w = rgb01.shape[:2]
    excess = (rgb01 - np.asarray(hdf_background().level)).sum(axis=-1)
    lab, n = ndimage.label(source_mask(rgb01, grow=0))
    ids = np.arange(1, n + 1)
    com = np.array(ndimage.center_of_mass(np.clip(excess, 0, None), lab, ids)).reshape(-1, 2)
    area = np.asarray(ndimage.sum(np.ones_like(excess), lab, ids))
    flux = np.asarray(ndimage.sum(excess, lab, ids))
    total, weight, used = np.zeros((s, s)), np.zeros((s, s)), 0
    for j in np.flatnonzero(keep(lab, ids, area)):
        y, x = com[j]
        if not (np.isfinite(x) and np.isfinite(y)) or flux[j] <= 0:
            continue
        x0, y0 = int(round(x)), int(round(y))
        if x0 < r or y0 < r or x0 >= w - r or y0 >= h - r:
            continue
        part = lab[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1]
        m = ((part == 0) | (part == ids[j])).astype(np.float64)
        total += excess[y0 - r : y0 + r + 1, x0 - r : x0 + r + 1] * m / flux[j]
        weight += m
        used += 1
    stack = total / np.maximum(weight, 1.0)
    return stack - np.median(np.concatenate([stack[0], stack[-1], stack[1:-1, 0], stack[1:-1, -1]])), used


@functools.lru_cache(maxsize=1)
def faint_source_transfer() -> np.ndarray:
    """How much less fine structure the field's faint sources carry than the composer's
    (:class:`FaintSources`), measured by forward modelling; cached in ``$GALAXYGAN_CACHE/sky/``.

    The field's small sources (parts of the 1.5 sigma source mask under 50 pix² holding no
    catalogue galaxy or star) are stacked (:func:`_stack_faint`); so are the composer's own faint
    sources (both populations, undamped), injected at the field's density into two field-sized
    drawings of the measured background (no variation), rounded to 8 bits and found and
    measured in exactly the same way, so that noise, centroid errors and the 8-bit levels blur
    both stacks alike. The ratio of the stacks' Fourier amplitudes, averaged over rings of
    ``k`` cycles per 15 px, is the transfer. On the deep field (about 2,400 sources a side):
    1.00 / 1.06 / 1.08 / 1.09 / 0.99 / 0.89 / 0.71 at k = 1 .. 7: the field's faint sources
    carry 0.71 of the model's power amplitude at 2.1 px periods and 0.89 at 2.5 px.

    Returns
    -------
    ndarray (8,), float64, read-only (measured once per process)
        The measured ratio at ``k = 0 .. 7`` cycles per 15 px (``k / 15`` cycles per pixel; 7 is
        the last ring below the Nyquist frequency); ``[0]`` is the stacks' total-flux ratio.
    """
    from galaxy_core.paths import cache_dir

    name = f"{FAINT_TRANSFER_VERSION}-{BACKGROUND_VERSION}".replace("/", "-")
    t = cached_arrays(cache_dir() / "sky" / f"{name}.npz", lambda: {"transfer": _measure_faint_transfer()},
                      keys=("transfer",))["transfer"]
    t.flags.writeable = False
    return t


def _measure_faint_transfer() -> np.ndarray:
    from galaxy_core.data.hdf import hdf_catalog, hdf_field

    rgb = hdf_field().astype(np.float64) / 255.0
    h, w = rgb.shape[:2]
    cat = hdf_catalog()
    small = small_detections(cat)
    cx = np.clip(np.rint(np.asarray(cat["x"], float)).astype(int), 0, w - 1)[~small]
    cy = np.clip(np.rint(np.asarray(cat["y"], float)).astype(int), 0, h - 1)[~small]

    def field_parts(lab, ids, area):
        holds_big = np.zeros(len(ids) + 1, bool)
        holds_big[lab[cy, cx]] = True
        return ~holds_big[ids] & (area < 50)

    real, _ = _stack_faint(rgb, field_parts)
    bg = dataclasses.replace(hdf_background(), modulation=None)  # drawn without fields: no variation either way
    rng = np.random.default_rng(5)
    faint = FaintSources(subcatalogue=True, damping=False)
    stacks = []
    for _ in range(2):
        sky = bg.draw((h, w), rng)
        src = faint((h, w), rng)
        for x, y, st in zip(src["x"], src["y"], src["stamps"]):  # placed as compose_sky places them
            s = st.shape[-1]
            add_stamp(sky, st, int(np.round(x)) - (s - 1) // 2, int(np.round(y)) - (s - 1) // 2)
        rgb8 = np.moveaxis(np.rint(np.clip(sky, 0.0, 1.0) * 255.0) / 255.0, 0, -1)
        stacks.append(_stack_faint(rgb8, lambda lab, ids, area: area < 50)[0])
    model = np.mean(stacks, axis=0)
    amp_r = np.abs(np.fft.fft2(np.fft.ifftshift(real)))
    amp_m = np.abs(np.fft.fft2(np.fft.ifftshift(model)))
    k = np.rint(ring_index(FAINT_STACK_SIDE)).astype(np.int64)
    return np.array([amp_r[k == i].mean() / amp_m[k == i].mean() for i in range(FAINT_STACK_SIDE // 2 + 1)])


def faint_damping() -> np.ndarray:
    """The radial transfer :class:`FaintSources` applies by default: :func:`faint_source_transfer`
    where it is below 1, else 1 (the composer's faint sources lose the fine structure the field's
    lack and gain nothing), and 1 at ``k = 0`` (every source keeps its flux exactly). (8,)
    float64 at ``k = 0 .. 7`` cycles per 15 px; held at ``[7]`` beyond."""
    t = np.minimum(faint_source_transfer(), 1.0)
    t[0] = 1.0
    return t


class FaintSources:
    """Sources below the grid catalogue's size cut, scattered uniformly over a sky tile.

    Count per tile ``Poisson(density * h * w)``; each source has a random small detection's
    1-sigma axes ``a``, ``b`` (floored at ``min_sigma`` px), orientation and band fluxes
    (:func:`faint_catalogue`), at a uniform sub-pixel position, drawn on a stamp (below)
    normalised to the catalogue flux. ``profile``:

    * ``"moffat"`` (default): an elliptical Moffat profile ``(1 + q / (2 (beta - 2)))^-beta``,
      ``q = (u / a)^2 + (v / b)^2``, i.e. core width ``alpha = a sqrt(2 (beta - 2))``, so its
      second moments are the catalogue's ``a^2``, ``b^2`` (``beta > 2``; Moffat 1969, the usual
      model of a star or compact source blurred by a PSF). It has a sharper core and wider
      wings than a Gaussian of the same moments, as the field's compact sources do.
    * ``"gaussian"``: an elliptical Gaussian of 1-sigma axes ``a``, ``b``.

    The profile is integrated over each pixel (``oversample`` x ``oversample`` sub-pixels;
    1 = sampled at the pixel centre, which makes a sub-pixel source too peaky), so the drawn
    source's pixel moments are the catalogue's plus ``(1 - 1 / oversample^2) / 12`` px^2. The
    catalogue's moments were themselves measured on pixels, so that term could be taken off
    first; doing so sharpened the cores and scored worse (below). Each stamp is at least
    ``side`` px and large enough for its profile (radius 3 alpha, or 3.5 a for the Gaussian, at
    most :data:`MAX_FAINT_SIDE`), so no wing is cut off.

    Measured with ``scripts/sky_realism_ablation.py --n 100 --seed S`` (grouped C2ST of the
    composer's default, four seed sets S; docs/families/sky.md): with ``dcgan_hdf32`` galaxies
    the Moffat (15 px stamps) gave 0.766-0.799 against 0.821-0.869 for the pixel-integrated
    Gaussian; with ``fastgan_hdf32`` galaxies 0.732-0.785 on 15 px stamps, 0.730-0.779 (mean
    0.752) on stamps sized to the profile (the default), 0.760-0.824 (mean 0.789) with the
    pixel term taken off (all before the background's pre-compensation; the default with it:
    0.725-0.770, mean 0.743; with the sky level and noise also varying across the sky:
    0.691-0.723, mean 0.700).

    ``subcatalogue``: also the sources below the catalogue's detection limit
    (:func:`subcatalogue_sources`): the two lists are pooled and the density is their sum, so
    each drawn source is one of either population in proportion to its count in the field.

    ``damping`` (default True): every stamp is filtered by :func:`faint_damping`, the measured
    shortfall of the field's faint sources in fine structure (0.71 of the profile's Fourier
    amplitude at 2.1 px periods, 0.89 at 2.5 px, 1 above 3 px; :func:`faint_source_transfer`),
    a periodic radial FFT filter with unit gain at ``k = 0``, so each source keeps its flux.
    With the level-subtracted pixel targets (:func:`real_stamp_reference`) it took the
    composer's grouped classifier test from 0.666 to 0.654 over sixteen seed sets
    (docs/families/sky.md).
    """

    def __init__(self, *, density: float | None = None, side: int = 15, min_sigma: float = 0.5,
                 subcatalogue: bool = False, profile: str = "moffat", beta: float = 4.0, oversample: int = 5,
                 damping: bool = True):
        if profile not in FAINT_PROFILES:
            raise ValueError(f"FaintSources: profile must be one of {FAINT_PROFILES}, got {profile!r}")
        if profile == "moffat" and not beta > 2:
            raise ValueError(f"FaintSources: the Moffat beta must be > 2 (finite second moments), got {beta}")
        if oversample < 1:
            raise ValueError(f"FaintSources: oversample must be >= 1, got {oversample}")
        self.profile, self.beta, self.oversample = profile, float(beta), int(oversample)
        cat = faint_catalogue()
        if subcatalogue:
            sub = subcatalogue_sources()
            cat = {k: (cat[k] + sub[k] if k == "density" else np.concatenate([cat[k], sub[k]])) for k in cat}
        self.cat = cat
        self.density = self.cat["density"] if density is None else float(density)
        if side < 3 or side % 2 == 0:
            raise ValueError(f"FaintSources: side must be odd and >= 3 (the stamp is centred on a pixel), got {side}")
        self.side, self.min_sigma = side, min_sigma
        self.damping = faint_damping() if damping else None

    def __call__(self, shape: tuple[int, int], rng: np.random.Generator):
        """Sources for a (h, w) tile: ``x``, ``y`` (n,) source centres (pix, tile frame; a
        stamp's centre pixel is at ``round(x), round(y)``) and ``stamps``, a list of n float32
        flux images (3, s, s), s odd: ``side``, or larger for a source whose profile reaches
        further (radius 3 alpha for the Moffat, 3.5 a for the Gaussian; at most
        :data:`MAX_FAINT_SIDE`), so that its second moments are the catalogue's."""
        h, w = shape
        n = int(rng.poisson(self.density * h * w))
        idx = rng.integers(0, len(self.cat["a"]), n)
        x, y = rng.uniform(-0.5, w - 0.5, n), rng.uniform(-0.5, h - 0.5, n)
        # the catalogue's axes are the continuous profile's; integrated over a pixel its moments
        # gain (1 - 1 / oversample^2) / 12 px^2 (see the class docstring)
        a = np.maximum(np.asarray(self.cat["a"][idx], np.float64), self.min_sigma)
        b = np.maximum(np.asarray(self.cat["b"][idx], np.float64), self.min_sigma)
        reach = 3.0 * np.sqrt(2 * (self.beta - 2)) * a if self.profile == "moffat" else 3.5 * a
        sides = np.clip(2 * np.ceil(reach).astype(np.int64) + 1, self.side, MAX_FAINT_SIDE)
        stamps: list = [None] * n
        for s in np.unique(sides):
            sel = np.flatnonzero(sides == s)
            drawn = self._draw(int(s), x[sel], y[sel], a[sel], b[sel], self.cat["theta"][idx[sel]],
                               self.cat["flux"][idx[sel]])
            for k, st in zip(sel, self._damped(drawn)):
                stamps[k] = st
        return {"x": x, "y": y, "stamps": stamps}

    def _damped(self, stamps: np.ndarray) -> np.ndarray:
        """(m, 3, s, s) stamps filtered by ``damping`` (radial, periodic; flux kept exactly)."""
        if self.damping is None:
            return stamps
        s = stamps.shape[-1]
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(s), np.fft.fftfreq(s), indexing="ij"))  # cycles / px
        k = np.arange(len(self.damping)) / FAINT_STACK_SIDE
        t = np.interp(f, k, self.damping, right=self.damping[-1])
        return np.fft.ifft2(np.fft.fft2(stamps.astype(np.float64)) * t).real.astype(np.float32)

    def _draw(self, s: int, x, y, a, b, theta, flux) -> np.ndarray:
        """(m, 3, s, s) float32 stamps of m sources (continuous 1-sigma axes ``a``, ``b``)."""
        d = np.arange(s) - (s - 1) / 2
        dx = d[None, None, :] - (x - np.round(x))[:, None, None]  # (m, 1, s): offsets from the centre
        dy = d[None, :, None] - (y - np.round(y))[:, None, None]
        cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        a, b = a[:, None, None], b[:, None, None]
        u0, v0 = dx * cos + dy * sin, -dx * sin + dy * cos  # (m, s, s) pixel centres in the source's axes
        sub = (np.arange(self.oversample) + 0.5) / self.oversample - 0.5  # sub-pixel centres
        prof = np.zeros((len(x), s, s))
        for ox in sub:
            for oy in sub:  # a sub-pixel offset only shifts the rotated coordinates
                u = u0 + (ox * cos + oy * sin)
                v = v0 + (oy * cos - ox * sin)
                q = (u / a) ** 2 + (v / b) ** 2
                prof += np.exp(-0.5 * q) if self.profile == "gaussian" else (1 + q / (2 * (self.beta - 2))) ** -self.beta
        prof /= prof.sum(axis=(1, 2), keepdims=True)
        return (flux[:, :, None, None] * prof[:, None]).astype(np.float32)


MAX_FAINT_SIDE = 63  # largest faint-source stamp (pixels)


# --------------------------------------------------------------------------- stars


@functools.lru_cache(maxsize=4)
def field_star_stamps(*, link_px: float = 60.0, pad: int = 3) -> dict:
    """Flux images of the deep field's stars, diffraction spikes included.

    The catalogue's ``star`` detections, each with the ``near_star`` fragments (pieces of its
    spikes and halo split off by the segmentation) whose centre lies within ``link_px`` of it.
    A star's stamp is the field minus the measured background level
    (:func:`~galaxy_core.sky.background.hdf_background`) over the union of the star's and its
    fragments' bounding boxes (grown by ``pad``), kept on the pixels of the field's source mask
    (:func:`~galaxy_core.sky.background.source_mask`) that are connected to the star or a
    fragment; neighbouring galaxies in the box are dropped. Saturated cores stay at the
    8-bit ceiling, as in the field.

    Returns
    -------
    dict
        ``stamps`` (m, 3, S, S) float32 flux images (field units, star centred at
        ``[(S - 1) / 2, (S - 1) / 2]``, S odd, zero padded); ``flux`` (m,) band-sum flux;
        ``density`` stars per pixel of the field (4 stars in 1000 x 872 px).

    Measured once per machine: kept in the cache (``cache_dir()/sky``, keyed by
    :data:`STARS_VERSION`, the background's version, the field's detection, ``link_px`` and
    ``pad``), so a new process reads it instead of masking the whole field again (about 4 s).
    """
    from galaxy_core.data.hdf import detection_key
    from galaxy_core.paths import cache_dir

    name = f"{STARS_VERSION}-{BACKGROUND_VERSION}-detection-{detection_key()}-link{link_px:g}-pad{int(pad)}"
    z = cached_arrays(cache_dir() / "sky" / f"{name.replace('/', '-')}.npz",
                      lambda: _measure_field_stars(link_px, int(pad)), keys=("stamps", "flux", "density"))
    return {"stamps": np.asarray(z["stamps"], np.float32), "flux": np.asarray(z["flux"], np.float64),
            "density": float(z["density"])}


STARS_VERSION = "stars/1"  # bump when field_star_stamps' measurement changes


def _measure_field_stars(link_px: float, pad: int) -> dict:
    """The arrays of :func:`field_star_stamps`, measured on the field."""
    from scipy import ndimage

    from galaxy_core.data.hdf import hdf_catalog, hdf_field

    cat = hdf_catalog()
    rej = np.asarray(cat["reject"]).astype(str)
    x, y = np.asarray(cat["x"], float), np.asarray(cat["y"], float)
    box = np.column_stack([cat["bbox_xmin"], cat["bbox_xmax"], cat["bbox_ymin"], cat["bbox_ymax"]]).astype(int)
    rgb = hdf_field().astype(np.float64) / 255.0
    h, w = rgb.shape[:2]
    flux = rgb - np.asarray(hdf_background().level)
    lab, _ = ndimage.label(source_mask(rgb))
    stars = np.flatnonzero(rej == "star")
    frags = np.flatnonzero(rej == "near_star")
    cut = []
    for s in stars:
        members = [s] + [f for f in frags if np.hypot(x[f] - x[s], y[f] - y[s]) <= link_px
                         and np.argmin(np.hypot(x[stars] - x[f], y[stars] - y[f])) == np.flatnonzero(stars == s)[0]]
        x0, x1 = max(box[members, 0].min() - pad, 0), min(box[members, 1].max() + pad + 1, w)
        y0, y1 = max(box[members, 2].min() - pad, 0), min(box[members, 3].max() + pad + 1, h)
        ids = {int(lab[int(round(y[m])), int(round(x[m]))]) for m in members} - {0}
        keep = np.isin(lab[y0:y1, x0:x1], list(ids))
        cut.append((np.moveaxis(flux[y0:y1, x0:x1] * keep[..., None], -1, 0), x[s] - x0, y[s] - y0))
    side = 2 * int(max(max(c.shape[1:]) for c, _, _ in cut)) + 1
    stamps = np.zeros((len(cut), 3, side, side), np.float32)
    half = (side - 1) // 2
    for i, (c, cx, cy) in enumerate(cut):
        oy, ox = half - int(round(cy)), half - int(round(cx))
        stamps[i, :, oy : oy + c.shape[1], ox : ox + c.shape[2]] = c
    return {"stamps": stamps, "flux": stamps.sum(axis=(1, 2, 3), dtype=np.float64), "density": len(stars) / (h * w)}


class FieldStars:
    """The field's stars (:func:`field_star_stamps`) scattered over a sky tile.

    The catalogue used for the grids leaves stars out, so a composed sky had none, while about
    one real 128 px tile in ten holds a star with its diffraction spikes (the field's PSF) and
    its saturated core. Count per tile ``Poisson(density * h * w)`` at the field's density,
    uniform positions (whole pixels), each a random one of the field's stars turned by a random
    element of the square's symmetry group (the real tiles are turned and flipped alike).
    """

    def __init__(self, *, density: float | None = None):
        ref = field_star_stamps()
        self.stamps = ref["stamps"]
        self.density = ref["density"] if density is None else float(density)

    def __call__(self, shape: tuple[int, int], rng: np.random.Generator):
        """Stars for a (h, w) tile: ``x``, ``y`` (n,) centres (pix, tile frame) and ``stamps``
        (n, 3, S, S) float32 flux images centred on them."""
        h, w = shape
        n = int(rng.poisson(self.density * h * w))
        idx = rng.integers(0, len(self.stamps), n)
        k = rng.integers(0, 8, n)
        x, y = rng.integers(0, w, n).astype(np.float64), rng.integers(0, h, n).astype(np.float64)
        out = []
        for i, ki in zip(idx, k):
            st = np.rot90(self.stamps[i], ki % 4, axes=(1, 2))
            out.append(st[:, :, ::-1] if ki >= 4 else st)
        side = self.stamps.shape[-1]
        stamps = np.ascontiguousarray(np.stack(out)) if out else np.zeros((0, 3, side, side), np.float32)
        return {"x": x, "y": y, "stamps": stamps.astype(np.float32)}

