"""The built-in ``hdf`` dataset: real galaxies cut out of the Hubble deep field image.

The field is ``skimage.data.hubble_deep_field()``, the 2012 Hubble eXtreme Deep Field colour
composite (NASA) shipped with scikit-image as an (872, 1000, 3) 8-bit RGB JPEG, so nothing is
downloaded. Sources are found by image segmentation with photutils (Bradley et al.,
``photutils``, doi:10.5281/zenodo.596036), following the recipe of SExtractor (Bertin &
Arnouts 1996, A&AS 117, 393):

1. luminance ``Y = 0.2125 R + 0.7154 G + 0.0721 B`` of the field scaled to [0, 1];
2. a smooth background and its rms from :class:`photutils.background.Background2D`
   (sigma-clipped median in boxes), subtracted;
3. convolution with a small normalised 2-D Gaussian kernel;
4. :func:`photutils.segmentation.detect_sources` at ``nsigma`` times the background rms;
5. :func:`photutils.segmentation.deblend_sources` (multi-thresholding plus watershed);
6. :class:`photutils.segmentation.SourceCatalog` for centroids, shapes and fluxes.

Every detection is kept in :func:`hdf_catalog` (positions and sizes also feed the sparse-sky
position model). The stamp dataset uses only the usable ones; the cuts, in the order applied:

``border``     the segment touches the edge of the field (the source is cut off);
``too_small``  segment area below ``min_area`` pixels (noise peaks, knots, unresolved specks);
``star``       a round (ellipticity < ``star_max_ellipticity``) source with at least
               ``star_min_saturated`` pixels saturated in all three channels: the point
               sources with diffraction spikes in this field;
``near_star``  within ``star_halo`` equivalent radii of a star: the spike tips that
               deblending splits off as separate sources;
``too_large``  the segment's bounding box does not fit in the stamp (per stamp size);
``off_field``  the centred stamp would cross the field edge (per stamp size); such sources are
               skipped, never padded, because mirrored sky would be learnt by a GAN.

Stamps are cut at native pixel scale, 32 px for ``resolution=32`` and 64 px for every other
resolution, so the 128 and 256 px datasets are a 64 px cut upsampled (bicubic) and carry no
more detail than the 64 px one. An optional centre crop is taken from the native cut first.

Neighbours: by default a stamp holds everything the field has around its source. In the 32 px
stamps about a quarter of the light connected to the central galaxy belongs to other catalogue
sources. ``neighbours="sky"`` replaces the pixels of every other detected source of at least
``min_area`` pix2 (the sources a position model places itself; smaller segments, mostly knots
of the galaxy that deblending split off, stay) -- its deblended segment, grown by
:data:`NEIGHBOUR_GROW` pixels, never into the source's own segment -- with sky
taken from source-free parts of the field, so it keeps the field's noise texture (see
:func:`_sky_fill`), from a random stream seeded by the source id (so a rebuild is identical). A
model trained on such stamps draws isolated galaxies, for a sky composer that places the
neighbours itself (how the composed skies fare: ``docs/families/sky.md``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import numbers
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from galaxy_core.data.transforms import centre_crop, centre_crop_box
from galaxy_core.data.prepared import PreparedDataset, cache_key, open_prepared, write_prepared
from galaxy_core.errors import DataError
from galaxy_core.io.atomic import read_arrays, write_arrays
from galaxy_core.paths import cache_dir
from galaxy_core.progress import Progress, ProgressBar, track

if TYPE_CHECKING:
    from astropy.table import Table

log = logging.getLogger(__name__)

HDF_VERSION = "hdf/1"
SOURCE = "builtin:hdf (skimage.data.hubble_deep_field)"
CHANNELS = ["R", "G", "B"]
RESOLUTIONS = (32, 64, 128, 256)
STAMP_SIZES = (32, 64)
SIZE_CLASSES = ("small", "medium", "large")
NEIGHBOURS = ("keep", "sky")
NEIGHBOUR_GROW = 2  # pixels by which other sources' segments are grown before they become sky
# Stamp-independent cuts first, then the two that depend on the stamp size.
CUTS = ("border", "too_small", "star", "near_star", "too_large", "off_field")


@dataclass(frozen=True)
class DetectionParams:
    """Every setting of source detection and of the stamp-independent cuts.

    Parameters
    ----------
    box_size : int
        Background2D box side (pixels) for the sigma-clipped median background and rms.
    filter_size : int
        Median filter (boxes) applied to the low-resolution background map.
    kernel_fwhm, kernel_size : float, int
        FWHM (pixels) and side of the Gaussian smoothing kernel used for detection.
    nsigma : float
        Detection threshold in units of the background rms (per pixel, after smoothing).
    n_pixels : int
        Minimum number of connected pixels above threshold for a detection (8-connected).
    n_levels, contrast : int, float
        Deblending: number of multi-threshold levels and the minimum flux fraction of a peak
        for it to become a separate source.
    min_area : int
        ``too_small`` cut: minimum segment area in pixels for a usable source.
    saturation : int
        8-bit value at or above which a pixel counts as saturated (all three channels).
    star_min_saturated : int
        ``star`` cut: minimum number of saturated pixels in the segment ...
    star_max_ellipticity : float
        ... and maximum ellipticity ``1 - b/a`` of a star.
    star_halo : float
        ``near_star`` cut: sources closer to a star than this many times the star's
        equivalent radius ``sqrt(area / pi)`` (diffraction-spike fragments).
    """

    box_size: int = 50
    filter_size: int = 3
    kernel_fwhm: float = 2.0
    kernel_size: int = 5
    nsigma: float = 2.0
    n_pixels: int = 10
    n_levels: int = 32
    contrast: float = 0.005
    min_area: int = 50
    saturation: int = 250
    star_min_saturated: int = 4
    star_max_ellipticity: float = 0.25
    star_halo: float = 2.0


DETECTION = DetectionParams()


# --------------------------------------------------------------------------- the field


@functools.lru_cache(maxsize=1)
def _field() -> np.ndarray:
    from skimage import data

    rgb = data.hubble_deep_field()
    rgb.setflags(write=False)
    return rgb


def hdf_field() -> np.ndarray:
    """The Hubble eXtreme Deep Field image distributed with scikit-image.

    Returns
    -------
    ndarray, (872, 1000, 3), uint8
        R, G, B in 0..255 (an 8-bit JPEG composite, not flux-calibrated). Row 0 is the top of
        the picture; pixel ``(x, y)`` of the catalogue is ``field[y, x]``. A fresh copy.
    """
    return _field().copy()


# --------------------------------------------------------------------------- detection


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float64 luminance in [0, 1] (Rec. 709 weights)."""
    from skimage.color import rgb2gray

    return rgb2gray(rgb)


def _background(image: np.ndarray, params: DetectionParams):
    """Sigma-clipped median background and rms maps of one (H, W) float image."""
    from photutils.background import Background2D, MedianBackground

    return Background2D(
        image,
        params.box_size,
        filter_size=params.filter_size,
        bkg_estimator=MedianBackground(),
    )


def _segment(lum: np.ndarray, rms: np.ndarray, params: DetectionParams):
    """Smooth, threshold and deblend a background-subtracted luminance image.

    Returns the convolved image and the deblended segmentation image.
    """
    from astropy.convolution import convolve
    from photutils.segmentation import deblend_sources, detect_sources, make_2dgaussian_kernel

    kernel = make_2dgaussian_kernel(params.kernel_fwhm, size=params.kernel_size)
    conv = convolve(lum, kernel)
    segm = detect_sources(conv, params.nsigma * rms, params.n_pixels)
    if segm is None:
        raise DataError(
            f"{SOURCE}: no sources detected; the image shipped with scikit-image may be damaged "
            "(reinstall scikit-image)"
        )
    segm = deblend_sources(
        conv,
        segm,
        params.n_pixels,
        n_levels=params.n_levels,
        contrast=params.contrast,
        progress_bar=False,
    )
    return conv, segm


def _channel_backgrounds(rgb01: np.ndarray, params: DetectionParams) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) background level and rms maps of R, G, B (values in [0, 1])."""
    bkgs = [_background(rgb01[..., c], params) for c in range(3)]
    level = np.stack([b.background for b in bkgs], axis=-1)
    rms = np.stack([b.background_rms for b in bkgs], axis=-1)
    return level, rms


def _channel_fluxes(rgb01: np.ndarray, segm, level: np.ndarray) -> np.ndarray:
    """(n_sources, 3) background-subtracted segment sums of R, G, B (values in [0, 1])."""
    from scipy import ndimage

    out = np.empty((segm.n_labels, 3))
    for c in range(3):
        band = rgb01[..., c] - level[..., c]
        out[:, c] = ndimage.sum_labels(band, labels=segm.data, index=segm.labels)
    return out


def _saturated_counts(rgb: np.ndarray, segm, params: DetectionParams) -> np.ndarray:
    """Number of pixels per segment saturated in all three channels."""
    from scipy import ndimage

    saturated = np.all(rgb >= params.saturation, axis=-1)
    return ndimage.sum_labels(saturated, labels=segm.data, index=segm.labels).astype(int)


def _measure(rgb: np.ndarray, params: DetectionParams):
    """Detect and measure every source.

    Returns the table before cuts and size classes and the maps: ``segm``, the (H, W) int32
    segmentation image (0 = sky, else the ``id`` of the source); ``level`` and ``rms``, the
    (H, W, 3) per-channel background level and rms (values in [0, 1]); ``lum_rms``, the (H, W)
    background rms of the luminance the detection thresholds.
    """
    from astropy.table import Table
    from photutils.segmentation import SourceCatalog
    from skimage.util import img_as_float

    rgb01 = img_as_float(rgb)  # (H, W, 3) in [0, 1]
    lum = _luminance(rgb)
    bkg = _background(lum, params)
    lum = lum - bkg.background
    conv, segm = _segment(lum, bkg.background_rms, params)
    cat = SourceCatalog(lum, segm, convolved_data=conv)
    level, rms = _channel_backgrounds(rgb01, params)
    flux = _channel_fluxes(rgb01, segm, level)
    table = Table()
    table["id"] = cat.label.astype(np.int32)
    table["x"] = np.asarray(cat.x_centroid, np.float64)
    table["y"] = np.asarray(cat.y_centroid, np.float64)
    table["area"] = cat.area.value.astype(np.int32)
    table["flux_r"], table["flux_g"], table["flux_b"] = flux.T
    table["flux_total"] = flux.sum(axis=1)
    table["kron_flux"] = np.asarray(cat.kron_flux, np.float64)
    table["semimajor_axis"] = cat.semimajor_axis.value
    table["semiminor_axis"] = cat.semiminor_axis.value
    table["ellipticity"] = cat.ellipticity.value
    table["orientation"] = cat.orientation.to_value("deg")
    table["bbox_xmin"] = cat.bbox_xmin.astype(np.int32)
    table["bbox_xmax"] = cat.bbox_xmax.astype(np.int32)
    table["bbox_ymin"] = cat.bbox_ymin.astype(np.int32)
    table["bbox_ymax"] = cat.bbox_ymax.astype(np.int32)
    table["n_saturated"] = _saturated_counts(rgb, segm, params).astype(np.int32)
    units = {"x": "pix", "y": "pix", "area": "pix2", "orientation": "deg"}
    units.update(semimajor_axis="pix", semiminor_axis="pix")
    for name, unit in units.items():
        table[name].unit = unit
    maps = {"segm": np.asarray(segm.data, np.int32), "level": level, "rms": rms,
            "lum_rms": np.asarray(bkg.background_rms, np.float64)}
    for m in maps.values():
        m.setflags(write=False)
    return table, maps


def _rejections(table, shape: tuple[int, int], params: DetectionParams) -> np.ndarray:
    """First stamp-independent cut each source fails ("" for a usable source)."""
    height, width = shape
    border = (
        (table["bbox_xmin"] == 0)
        | (table["bbox_ymin"] == 0)
        | (table["bbox_xmax"] == width - 1)
        | (table["bbox_ymax"] == height - 1)
    )
    too_small = np.asarray(table["area"]) < params.min_area
    star = (np.asarray(table["n_saturated"]) >= params.star_min_saturated) & (
        np.asarray(table["ellipticity"]) < params.star_max_ellipticity
    )
    near_star = _near_stars(table, star, params) & ~star
    reason = np.full(len(table), "", dtype="U9")
    flags = (("near_star", near_star), ("star", star), ("too_small", too_small), ("border", border))
    for name, flag in flags:
        reason[np.asarray(flag)] = name  # later assignments win: the first cut in CUTS order
    return reason


def _near_stars(table, star: np.ndarray, params: DetectionParams) -> np.ndarray:
    """True for sources within ``star_halo`` equivalent radii of a star's centroid.

    Deblending splits the tips of a star's diffraction spikes into separate small sources;
    this catches them (and the few neighbours lying in the star's glare).
    """
    x, y = np.asarray(table["x"]), np.asarray(table["y"])
    near = np.zeros(len(table), bool)
    for i in np.flatnonzero(star):
        radius = params.star_halo * np.sqrt(table["area"][i] / np.pi)
        near |= np.hypot(x - x[i], y - y[i]) < radius
    return near


def empty_size_classes(area, lo: float, hi: float) -> list[str]:
    """The :data:`SIZE_CLASSES` that none of ``area`` falls in (small < ``lo`` <= medium <
    ``hi`` <= large), in that order.

    Terciles of sizes with many ties can coincide with each other, or the lower one with the
    smallest size (a third of the sources at one area), and then a class is empty.
    """
    a = np.asarray(area, np.float64)
    counts = (np.sum(a < lo), np.sum((a >= lo) & (a < hi)), np.sum(a >= hi))
    return [name for name, k in zip(SIZE_CLASSES, counts) if k == 0]


def _size_classes(area: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Small / medium / large by the area terciles of the usable sources.

    Raises
    ------
    DataError
        The terciles leave a class without a usable source (areas with many ties).
    """
    lo, hi = np.round(np.percentile(area[usable], [100 / 3, 200 / 3]), 2)
    empty = empty_size_classes(area[usable], lo, hi)
    if empty:
        raise DataError(f"hdf: the area terciles {lo:g} and {hi:g} pix2 of the {int(usable.sum())} usable sources "
                        f"leave no {' or '.join(empty)} source (too many equal areas); the detection parameters "
                        "(DetectionParams) must give sources of differing areas")
    cls = np.where(area < lo, "small", np.where(area < hi, "medium", "large"))
    return cls.astype("U6"), float(lo), float(hi)


def _detection(params: DetectionParams) -> Table:
    """The flagged, size-classed catalogue of :func:`_detection_maps` (cached there)."""
    return _detection_maps(params)[0]


@functools.lru_cache(maxsize=1)
def _detection_maps(params: DetectionParams) -> tuple[Table, dict]:
    """Detect, measure, flag and size-class every source (once per process and params).

    Returns the catalogue and the maps of :func:`_measure` (read-only arrays). The result is
    kept in the cache (``cache_dir()/hdf``, keyed by :data:`HDF_VERSION`, ``params`` and the
    versions of the libraries that detect and measure), so a new process reads it instead of
    detecting again (about 10 s).
    """
    path = _detection_cache_path(params)
    cached = _read_detection(path)
    if cached is not None:
        return cached
    table, maps = _detect_and_flag(params)
    info = {"columns": list(table.colnames), "maps": list(maps),
            "units": {c: str(table[c].unit) for c in table.colnames if table[c].unit is not None},
            "meta": dict(table.meta)}  # names, units and meta as JSON: no pickles
    write_arrays(path, {"info": np.array(json.dumps(info))} | {f"col_{c}": np.asarray(table[c]) for c in table.colnames}
                 | {f"map_{m}": v for m, v in maps.items()})
    return table, maps


def _detect_and_flag(params: DetectionParams) -> tuple[Table, dict]:
    rgb = _field()
    table, maps = _measure(rgb, params)
    reason = _rejections(table, rgb.shape[:2], params)
    usable = reason == ""
    cls, lo, hi = _size_classes(np.asarray(table["area"]), usable)
    table["size_class"] = cls
    table["usable"] = usable
    table["reject"] = reason
    table.meta.update(
        SOURCE=SOURCE,
        VERSION=HDF_VERSION,
        AREA_LO=lo,
        AREA_HI=hi,
        comments=[
            "size_class: small if area < AREA_LO, medium if < AREA_HI, else large",
            "AREA_LO, AREA_HI: area terciles (pix2) of the usable sources",
        ],
    )
    return table, maps


def detection_key(params: DetectionParams | None = None) -> str:
    """16 hex digits naming one detection of the field: :data:`HDF_VERSION`, the detection
    settings (default :data:`DETECTION`) and the versions of the libraries that detect and
    measure. What is measured from the detection can be cached under it."""
    from importlib.metadata import version

    libs = {lib: version(lib) for lib in ("photutils", "scikit-image", "astropy", "numpy", "scipy")}
    params = DETECTION if params is None else params
    return hashlib.sha256(json.dumps([HDF_VERSION, asdict(params), libs], sort_keys=True).encode()).hexdigest()[:16]


def _detection_cache_path(params: DetectionParams):
    return cache_dir() / "hdf" / f"detection-{detection_key(params)}.npz"


def _read_detection(path) -> tuple[Table, dict] | None:
    """The cached result of :func:`_detection_maps`, or None (absent or unreadable: detected again)."""
    from astropy.table import Table

    z = read_arrays(path, keys=("info",))
    try:
        info = json.loads(str(z["info"]))
        table = Table([z[f"col_{c}"] for c in info["columns"]], names=info["columns"], meta=info["meta"])
        maps = {m: z[f"map_{m}"] for m in info["maps"]}
    except (TypeError, KeyError, ValueError):  # z None, or an entry of another layout
        return None
    for name, unit in info["units"].items():
        table[name].unit = unit
    for m in maps.values():
        m.setflags(write=False)
    return table, maps


def detection_noise() -> float:
    """Median background rms of the field's luminance (values in [0, 1]): the noise that
    :func:`hdf_catalog`'s detection threshold is ``DETECTION.nsigma`` times, after smoothing
    with a Gaussian of ``DETECTION.kernel_fwhm`` pixels."""
    return float(np.median(_detection_maps(DETECTION)[1]["lum_rms"]))


def hdf_catalog() -> Table:
    """Every source detected in the field, usable or not (cached in memory and on disk:
    :func:`_detection_maps`).

    Returns
    -------
    astropy.table.Table
        One row per deblended segment, in photutils label order, with columns

        ========================  =============================================================
        ``id``                    photutils segment label
        ``x``, ``y``              intensity-weighted centroid (pix, full field, 0-based;
                                  pixel centres at integers; ``field[y, x]``)
        ``area``                  segment area (pix2)
        ``flux_r/g/b``            background-subtracted sum over the segment of each channel
                                  scaled to [0, 1] (arbitrary units: the data are not calibrated)
        ``flux_total``            ``flux_r + flux_g + flux_b``
        ``kron_flux``             luminance flux in the Kron (1980, ApJS 43, 305) aperture of
                                  2.5 Kron radii (NaN where undefined)
        ``semimajor_axis``,       1-sigma extent of the luminance profile along the major and
        ``semiminor_axis``        minor axes (pix)
        ``ellipticity``           ``1 - b/a``
        ``orientation``           major-axis angle from +x, counter-clockwise (deg)
        ``bbox_*``                segment bounding box (pix, inclusive)
        ``n_saturated``           pixels saturated in all three channels
        ``size_class``            "small", "medium" or "large" (thresholds in ``meta``)
        ``usable``                passed the stamp-independent cuts
        ``reject``                the first cut failed: "border", "too_small", "star" or
                                  "near_star" ("" if usable)
        ========================  =============================================================

        ``meta["AREA_LO"]`` and ``meta["AREA_HI"]`` are the size class thresholds (pix2).
        A fresh copy: changing it does not change the cache.
    """
    return _detection(DETECTION).copy()


# --------------------------------------------------------------------------- stamps


def stamp_size(resolution: int) -> int:
    """Native cut-out side (pixels) used for ``resolution``: 32 for 32, otherwise 64."""
    return 32 if resolution == 32 else 64


def _stamp_origin(x: np.ndarray, y: np.ndarray, stamp: int) -> tuple[np.ndarray, np.ndarray]:
    """First pixel (x0, y0) of the ``stamp`` x ``stamp`` cut whose centre is nearest (x, y).

    The centre of an even-sided cut lies between pixels, at ``x0 + (stamp - 1) / 2``.
    """
    half = (stamp - 1) / 2
    x0 = np.floor(np.asarray(x) - half + 0.5).astype(np.int64)
    y0 = np.floor(np.asarray(y) - half + 0.5).astype(np.int64)
    return x0, y0


def _stamp_rejections(table, stamp: int, shape: tuple[int, int]) -> np.ndarray:
    """First cut (including the per-stamp ones) each source fails ("" if kept)."""
    height, width = shape
    x0, y0 = _stamp_origin(table["x"], table["y"], stamp)
    off_field = (x0 < 0) | (y0 < 0) | (x0 + stamp > width) | (y0 + stamp > height)
    too_large = (np.asarray(table["bbox_xmax"] - table["bbox_xmin"]) + 1 > stamp) | (
        np.asarray(table["bbox_ymax"] - table["bbox_ymin"]) + 1 > stamp
    )
    reason = np.asarray(table["reject"]).astype("U9")
    reason[(reason == "") & too_large] = "too_large"
    reason[(reason == "") & off_field] = "off_field"
    return reason


def _stamp_selection(stamp: int):
    """The stamp catalogue for ``stamp`` and the counts: detected, kept, skipped per cut."""
    table = hdf_catalog()
    reason = _stamp_rejections(table, stamp, _field().shape[:2])
    keep = reason == ""
    x0, y0 = _stamp_origin(table["x"], table["y"], stamp)
    out = table[keep]
    out.remove_columns(["usable", "reject"])
    out["stamp_x0"] = x0[keep].astype(np.int32)
    out["stamp_y0"] = y0[keep].astype(np.int32)
    out.meta["STAMP"] = stamp
    counts = {
        "detected": len(table),
        "kept": int(keep.sum()),
        "skipped": {cut: int(np.sum(reason == cut)) for cut in CUTS},
    }
    return out, counts


def hdf_stamp_catalog(*, stamp: int = 64) -> Table:
    """The usable sources that get a ``stamp`` px cut-out, with the cut's origin.

    Parameters
    ----------
    stamp : {32, 64}
        Native stamp side in pixels.

    Returns
    -------
    astropy.table.Table
        The :func:`hdf_catalog` columns of the kept sources (without ``usable`` and
        ``reject``) plus ``stamp_x0``, ``stamp_y0``: the field pixel ``(x, y)`` at stamp
        index ``[0, 0]``, so the source centroid sits at ``x - stamp_x0 ~ (stamp - 1) / 2``.
        ``meta`` holds ``STAMP`` and the size class thresholds ``AREA_LO``, ``AREA_HI``.
    """
    if stamp not in STAMP_SIZES:
        raise DataError(f"hdf: stamp size must be one of {STAMP_SIZES}, got {stamp!r}")
    return _stamp_selection(stamp)[0]


def _crop_resize(stamp_rgb: np.ndarray, *, crop: float, resolution: int) -> np.ndarray:
    """(S, S, 3) uint8 -> (resolution, resolution, 3) uint8: centre crop, then resize.

    The crop is the project's one centre crop (:func:`galaxy_core.data.transforms.centre_crop`:
    the central ``crop`` fraction of the side, the same margin on every edge, so the centre
    does not move). Resizing uses bicubic interpolation with an antialiasing Gaussian
    when shrinking (:func:`skimage.transform.resize`, ``anti_aliasing=True``).
    """
    from skimage.transform import resize
    from skimage.util import img_as_float, img_as_ubyte

    cut = np.moveaxis(centre_crop(np.moveaxis(stamp_rgb, -1, 0), crop), 0, -1)
    if cut.shape[0] == resolution:
        return np.ascontiguousarray(cut)
    cut = img_as_float(cut)
    # Channel by channel: a 3-D spline over (H, W, C) is several times slower and the same.
    shape = (resolution, resolution)
    bands = [resize(cut[..., c], shape, order=3, anti_aliasing=True) for c in range(3)]
    out = np.stack(bands, axis=-1)  # (res, res, 3)
    return img_as_ubyte(np.clip(out, 0.0, 1.0))  # bicubic overshoots a little: clip


def neighbour_mask(segm_cut: np.ndarray, own_id: int, *, grow: int = NEIGHBOUR_GROW,
                   removable: np.ndarray | None = None) -> np.ndarray:
    """Pixels of a cut-out that belong to other detected sources.

    Parameters
    ----------
    segm_cut : array (S, S), int
        The field's segmentation image over the cut-out (0 = sky, else a source ``id``).
    own_id : int
        The ``id`` of the source the cut-out is centred on.
    removable : array (max id + 1,), bool, optional
        Which source ids count as neighbours (indexed by id); default every source.
    grow : int
        Pixels by which the other sources' segments are grown (their faint wings lie outside
        the detection threshold); never into the source's own segment.

    Returns
    -------
    ndarray (S, S), bool
    """
    from scipy import ndimage

    other = (segm_cut != 0) & (segm_cut != own_id)
    if removable is not None:
        other &= np.asarray(removable, bool)[segm_cut]
    if grow > 0 and other.any():
        other = ndimage.binary_dilation(other, structure=np.ones((3, 3), bool), iterations=grow)
    return other & (segm_cut != own_id)


def _neighbour_ids() -> np.ndarray:
    """(max id + 1,) bool: the catalogue sources that count as neighbours, those of at least
    ``min_area`` pix2 (the sources a sky position model places itself). Smaller segments stay in
    a stamp: most are knots of the galaxy itself that deblending split off, or faint specks."""
    cat = _detection(DETECTION)
    ids = np.asarray(cat["id"])
    out = np.zeros(int(ids.max()) + 1, bool)
    out[ids[np.asarray(cat["area"]) >= DETECTION.min_area]] = True
    return out


def _sky_fill(field: np.ndarray, maps: dict, y0: int, x0: int, stamp: int, where: np.ndarray,
              rng: np.random.Generator, *, tries: int = 32) -> np.ndarray:
    """The (S, S, 3) uint8 cut at ``(y0, x0)`` with its ``where`` pixels replaced by sky.

    Sky comes from the field itself, so it has the field's noise texture (the JPEG's correlated
    grain, not white noise): the same box shifted by a random offset, pixel by pixel where the
    shifted box is free of every source (segments grown by :data:`NEIGHBOUR_GROW`), moved from
    the background level there to the level here. Offsets are tried until every pixel is
    filled; any left after ``tries`` offsets get the level plus Gaussian noise of the rms.
    """
    from scipy import ndimage

    height, width = field.shape[:2]
    box = np.s_[y0 : y0 + stamp, x0 : x0 + stamp]
    level = maps["level"][box]
    out = field[box].astype(np.float64) / 255.0
    todo = where.copy()
    for _ in range(tries):
        if not todo.any():
            break
        sy, sx = int(rng.integers(0, height - stamp + 1)), int(rng.integers(0, width - stamp + 1))
        other = np.s_[sy : sy + stamp, sx : sx + stamp]
        free = ~ndimage.binary_dilation(maps["segm"][other] != 0, structure=np.ones((3, 3), bool),
                                        iterations=NEIGHBOUR_GROW)
        take = todo & free
        out[take] = field[other][take] / 255.0 - maps["level"][other][take] + level[take]
        todo &= ~take
    if todo.any():
        noise = level + maps["rms"][box] * rng.standard_normal(level.shape)
        out[todo] = noise[todo]
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def _cut_stamps(table, *, stamp: int, crop: float, resolution: int, neighbours: str = "keep",
                progress: Progress) -> np.ndarray:
    """(N, 3, resolution, resolution) uint8 stamps for the rows of a stamp catalogue."""
    field = _field()
    maps = _detection_maps(DETECTION)[1] if neighbours == "sky" else None
    removable = _neighbour_ids() if neighbours == "sky" else None
    images = np.empty((len(table), 3, resolution, resolution), np.uint8)
    rows = zip(table["id"], table["stamp_x0"], table["stamp_y0"])
    for i, (sid, x0, y0) in enumerate(track(rows, progress, total=len(table), desc="cutting stamps")):
        cut = field[y0 : y0 + stamp, x0 : x0 + stamp]  # (S, S, 3)
        if maps is not None:
            where = neighbour_mask(maps["segm"][y0 : y0 + stamp, x0 : x0 + stamp], int(sid), removable=removable)
            rng = np.random.default_rng([int(sid), stamp])
            cut = _sky_fill(field, maps, y0, x0, stamp, where, rng)
        images[i] = _crop_resize(cut, crop=crop, resolution=resolution).transpose(2, 0, 1)
    return images


# --------------------------------------------------------------------------- the dataset


def _check_options(resolution, crop, neighbours="keep") -> None:
    if isinstance(resolution, bool) or resolution not in RESOLUTIONS:
        raise DataError(f"hdf: resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    if neighbours not in NEIGHBOURS:
        raise DataError(f"hdf: neighbours must be one of {NEIGHBOURS}, got {neighbours!r}")
    if isinstance(crop, bool) or not isinstance(crop, numbers.Real) or not 0 < crop <= 1:
        raise DataError(f"hdf: crop must be a fraction in (0, 1], got {crop!r}")


def _resize_note(stamp: int, crop: float, resolution: int) -> str:
    side = centre_crop_box((stamp, stamp), crop)[2]
    if side == resolution:
        return f"none ({side} px native)"
    return f"{side} px -> {resolution} px, skimage.transform.resize(order=3, anti_aliasing=True)"


def _options(resolution: int, crop: float, neighbours: str = "keep") -> dict:
    # The versions from the installed distributions: importing photutils only to read its
    # version takes seconds (astropy.table, scipy), which every training process would pay.
    from importlib.metadata import version

    extra = {} if neighbours == "keep" else {"neighbours": neighbours, "neighbour_grow": NEIGHBOUR_GROW,
                                             "neighbour_fill": "field-sky/1",
                                             "neighbour_min_area": DETECTION.min_area}
    return {**extra,
        "name": "hdf",
        "version": HDF_VERSION,
        "skimage": version("scikit-image"),
        "photutils": version("photutils"),
        "resolution": int(resolution),
        "crop": float(crop),
        "stamp": stamp_size(resolution),
        "detection": asdict(DETECTION),
    }


def prepare_hdf(
    *,
    resolution: int = 64,
    crop: float = 1.0,
    neighbours: str = "keep",
    rebuild: bool = False,
    progress: Progress = True,
) -> PreparedDataset:
    """Prepare (or open the cached) ``hdf`` stamp dataset.

    Parameters
    ----------
    resolution : {32, 64, 128, 256}
        Output side in pixels. 32 uses 32 px native cut-outs, the others 64 px cut-outs
        (resized up for 128 and 256: no new detail, only more pixels).
    crop : float
        Centre-crop fraction of the native cut-out, in (0, 1], applied before resizing.
    neighbours : {"keep", "sky"}
        ``"keep"`` cuts the field as it is; ``"sky"`` replaces other sources' pixels with
        source-free sky from elsewhere in the field (see the module docstring), for a model
        of isolated galaxies.
    rebuild : bool
        Detect and cut again even if a cached copy exists.
    progress : bool or callable
        Show a tqdm progress bar while cutting stamps; or a callable ``progress(done, total)`` called as work
        completes (:mod:`galaxy_core.progress`).

    Returns
    -------
    PreparedDataset
        ``images``: (N, 3, resolution, resolution) uint8, channels R, G, B, kind "image";
        ``catalog``: row i is the :func:`hdf_stamp_catalog` row of image i. Stored under
        ``cache_dir()/"prepared"/"hdf-<key>"``.

    Raises
    ------
    DataError
        For a resolution, crop or neighbours value outside the allowed ones.
    """
    _check_options(resolution, crop, neighbours)
    options = _options(resolution, crop, neighbours)
    key = cache_key(options)
    root = cache_dir() / "prepared" / f"hdf-{key}"
    if not rebuild and (root / "manifest.json").exists():
        try:
            return open_prepared(root)
        except DataError as e:  # damaged (a copy cut short): prepare it again
            log.warning("%s; preparing it again", e)
    if rebuild:  # detect from the image again, not from memory or the cached detection
        _detection_maps.cache_clear()
        _detection_cache_path(DETECTION).unlink(missing_ok=True)
    stamp = options["stamp"]
    with ProgressBar(progress, total=1, desc="detecting sources") as bar:
        table, counts = _stamp_selection(stamp)  # detection: about 10 s once, then read from the cache
        bar.update()
    images = _cut_stamps(table, stamp=stamp, crop=crop, resolution=resolution, neighbours=neighbours,
                         progress=progress)
    manifest = {
        "name": "hdf",
        "key": key,
        "source": SOURCE,
        "channels": CHANNELS,
        "kind": "image",
        "preprocess": {
            "stamp": stamp,
            "crop": float(crop),
            "resolution": int(resolution),
            "resize": _resize_note(stamp, crop, resolution),
            "neighbours": neighbours if neighbours == "keep" else
            f"sky: other sources of >= {DETECTION.min_area} pix2, segments grown by {NEIGHBOUR_GROW} px, "
            "replaced by source-free field pixels",
            "detection": asdict(DETECTION),
            "versions": {
                "hdf": HDF_VERSION,
                "skimage": options["skimage"],
                "photutils": options["photutils"],
            },
        },
        "stretch": None,
        "counts": counts,
        "size_classes": {"area_lo": table.meta["AREA_LO"], "area_hi": table.meta["AREA_HI"]},
    }
    return write_prepared(root, images, manifest, catalog=table, replace=rebuild)
