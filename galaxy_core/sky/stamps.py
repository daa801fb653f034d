"""Galaxy stamps as the composer adds them: flux images of galaxy patches, the real ``hdf``
stamps they are compared with, and the flux-additive placement of a stamp onto a sky.

A galaxy's flux image is its patch minus a sky level, kept inside a segmentation mask and an
edge taper (:func:`galaxy_flux`); :func:`add_stamp` ADDS it to a sky, never writes over it, so
a composed sky's total is its background's plus the placed fluxes (field units, as
:mod:`galaxy_core.sky.background` says).
"""

from __future__ import annotations

import functools

import numpy as np

from galaxy_core.sky.background import hdf_background


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
        the deep field (:func:`~galaxy_core.sky.background.hdf_background`). Default: each patch's border median, the only
        estimate for a generator's patch. A border median holds the wings of the galaxy and of
        its neighbours (0.012 of a band sum above the field's level for the median real 32 px
        stamp, 0.05 at the 90th percentile), so taking it off dims the whole galaxy; the mask
        is found the same way either way.

    Returns
    -------
    ndarray (n, 3, S, S), float32
        Flux in field units (band value in [0, 1] minus the sky level), zero outside the mask.
    """
    return source_flux((np.asarray(patches, np.float32) + 1) / 2, nsigma=nsigma, level=level, noise_floor=1e-4)


def source_flux(values: np.ndarray, *, nsigma: float = 2.0, level=None, noise_floor: float | None = None
                ) -> np.ndarray:
    """The source at the centre of each patch, in the patches' own units: :func:`galaxy_flux`
    for values that are not model-range display values (e.g. a flux-calibrated model's output
    in nanomaggies, where adding two sources adds their fluxes).

    Parameters
    ----------
    values : array (n, C, S, S), float
        Patches in any linear unit.
    nsigma, level
        As :func:`galaxy_flux` (``level``: C values in the patches' unit).
    noise_floor : float, optional
        The least border noise the mask threshold assumes, in the patches' unit (a noiseless
        patch would otherwise keep every positive pixel). Default: 1e-4 of each patch's largest
        absolute smoothed band sum, so the floor scales with the unit; :func:`galaxy_flux`
        passes 1e-4 field units.

    Returns
    -------
    ndarray (n, C, S, S), float32
        The values minus the sky level (each patch's border median unless ``level`` is given),
        zero outside the central source's dilated ``nsigma`` mask, times :func:`edge_taper`.
    """
    from scipy import ndimage

    x = np.asarray(values, np.float32)
    f = x - np.median(border_pixels(x), axis=-1)[..., None, None]
    total = ndimage.uniform_filter(f.sum(axis=1), size=(1, 3, 3))  # (n, S, S)
    edge = border_pixels(total)
    noise = 1.4826 * np.median(np.abs(edge - np.median(edge, axis=-1, keepdims=True)), axis=-1) / 3
    floor = 1e-4 * np.abs(total).max(axis=(1, 2)) if noise_floor is None else noise_floor
    mask = total > nsigma * np.maximum(noise, floor)[:, None, None]
    mask = ndimage.binary_dilation(mask, structure=np.ones((1, 3, 3), bool))
    mask = np.stack([_central_component(m) for m in mask])
    if level is not None:
        f = x - np.asarray(level, np.float32).reshape(1, -1, 1, 1)
    return (f * mask[:, None] * edge_taper(x.shape[-1])).astype(np.float32)


def border_pixels(a: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels of each (..., S, S) patch: (..., 4 S - 4), same dtype."""
    return np.concatenate([a[..., 0, :], a[..., -1, :], a[..., 1:-1, 0], a[..., 1:-1, -1]], axis=-1)


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

    ``sky``: ``"level"`` takes off the field's measured sky level (:func:`~galaxy_core.sky.background.hdf_background`): the
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
