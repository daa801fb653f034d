"""Run a galaxy detector over a composed sky and score it against the truth table.

Detection follows the ``hdf`` recipe (:mod:`galaxy_core.data.hdf`; SExtractor, Bertin &
Arnouts 1996, as implemented in photutils): background and rms from
:class:`photutils.background.Background2D`, Gaussian smoothing, :func:`detect_sources` at
``nsigma`` rms, :func:`deblend_sources`, centroids from :class:`SourceCatalog`. Matching is
one-to-one, nearest first, within ``radius`` pixels; completeness is the fraction of truth
galaxies matched, purity the fraction of detections matched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def detect(image: np.ndarray, *, nsigma: float = 2.0, n_pixels: int = 10, deblend: bool = True,
           box_size: int = 50) -> dict[str, np.ndarray]:
    """Detect sources in a 2-D image.

    Parameters
    ----------
    image : array (H, W), float
        One band or the band sum of a sky.
    nsigma : float
        Threshold in background rms (after smoothing with a 2 px FWHM Gaussian).
    n_pixels : int
        Minimum connected pixels of a source.
    deblend : bool
        Split blended sources (32 levels, contrast 0.005).
    box_size : int
        Background box side (pix); reduced for small images.

    Returns
    -------
    dict
        ``x``, ``y`` centroids (pix), ``area`` (pix2), ``flux`` (background-subtracted segment
        sum), ``segm`` (H, W) int label image (0 = sky). Empty arrays when nothing is found.
    """
    from astropy.convolution import convolve
    from photutils.background import Background2D, MedianBackground
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel

    img = np.asarray(image, np.float64)
    box = max(8, min(box_size, min(img.shape) // 4))
    try:
        bkg = Background2D(img, box, filter_size=3, bkg_estimator=MedianBackground())
    except ValueError as e:  # e.g. a sky of exact zeros: sigma clipping leaves no box usable
        from galaxy_core.errors import DataError

        raise DataError(f"cannot estimate the sky background of this {img.shape[1]} x {img.shape[0]} px image "
                        f"(photutils: {e}); detection needs a sky with noise around its sources") from e
    data = img - bkg.background
    conv = convolve(data, make_2dgaussian_kernel(2.0, size=5))
    segm = detect_sources(conv, nsigma * bkg.background_rms, n_pixels)
    empty = {k: np.zeros(0) for k in ("x", "y", "area", "flux")}
    if segm is None:
        return empty | {"segm": np.zeros(img.shape, np.int32)}
    if deblend:
        segm = deblend_sources(conv, segm, n_pixels, n_levels=32, contrast=0.005, progress_bar=False)
    cat = SourceCatalog(data, segm, convolved_data=conv)
    return {"x": np.asarray(cat.x_centroid, float), "y": np.asarray(cat.y_centroid, float),
            "area": np.asarray(cat.area.value, float), "flux": np.asarray(cat.segment_flux, float),
            "segm": np.asarray(segm.data, np.int32)}


def match(truth_xy: np.ndarray, det_xy: np.ndarray, *, radius: float) -> np.ndarray:
    """One-to-one nearest matching: index of the detection matched to each truth (-1 if none).

    Pairs within ``radius`` are taken in order of distance, each truth and detection at most once.
    """
    from scipy.spatial import cKDTree

    out = np.full(len(truth_xy), -1, np.int64)
    if len(truth_xy) == 0 or len(det_xy) == 0:
        return out
    pairs = cKDTree(truth_xy).sparse_distance_matrix(cKDTree(det_xy), radius, output_type="ndarray")
    used = np.zeros(len(det_xy), bool)
    for i, j, _ in sorted(pairs.tolist(), key=lambda r: r[2]):
        i, j = int(i), int(j)
        if out[i] < 0 and not used[j]:
            out[i], used[j] = j, True
    return out


SOURCE_RADIUS = 1.5  # px: matching radius for faint sources and stars in the purity (see detection_report)
DETECTED_SPURIOUS, DETECTED_GALAXY, DETECTED_SOURCE = 0, 1, 2  # DetectionReport.kind


@dataclass
class DetectionReport:
    """Detections on a sky with completeness and purity against its truth table.

    Attributes
    ----------
    detections : dict
        Output of :func:`detect`.
    matched : ndarray (n_galaxies,), int
        Detection index per truth galaxy (rows with ``cls >= 0``; -1 = missed).
    completeness : float
        Matched fraction of the truth galaxies.
    completeness_bright : float
        Same for the galaxies with ``flux >= bright_flux``.
    purity : float
        Fraction of the detections matched to a galaxy (within ``radius``) or to a faint source
        or star (within ``source_radius``).
    purity_galaxies : float
        Fraction of the detections matched to a galaxy.
    radius, source_radius, bright_flux : float
        Matching radii (px) and the flux above which a galaxy counts as bright.
    galaxy_xy : ndarray (n_galaxies, 2), float
        x, y of the truth galaxies, in the order of ``matched`` (``galaxy_xy[matched < 0]`` are
        the missed ones).
    kind : ndarray (n_detections,), int8
        What each detection was matched to: ``DETECTED_GALAXY`` (1), ``DETECTED_SOURCE`` (2: a
        faint source or star) or ``DETECTED_SPURIOUS`` (0: nothing in the truth table).
    """

    detections: dict
    matched: np.ndarray
    completeness: float
    completeness_bright: float
    purity: float
    radius: float
    bright_flux: float
    purity_galaxies: float = float("nan")
    source_radius: float = float("nan")
    kind: np.ndarray | None = None
    galaxy_xy: np.ndarray | None = None

    def summary(self) -> dict:
        return {"n_detected": int(len(self.detections["x"])), "n_truth": int(len(self.matched)),
                "completeness": self.completeness, "completeness_bright": self.completeness_bright,
                "purity": self.purity, "purity_galaxies": self.purity_galaxies, "radius_px": self.radius,
                "source_radius_px": self.source_radius, "bright_flux": self.bright_flux}


def detection_report(image: np.ndarray, truth, *, radius: float = 5.0, bright_flux: float | None = None,
                     nsigma: float = 2.0, source_radius: float = SOURCE_RADIUS) -> DetectionReport:
    """Detect on the band sum of a sky (3, H, W) and match to ``truth`` (x, y, flux).

    ``bright_flux`` defaults to the median truth flux. Rows with a negative ``cls`` (-1: faint
    sources below the grid catalogue's size cut, -2: stars) are left out of the completeness;
    a detection within ``source_radius`` (default 1.5 px) of one of them, after the galaxies are
    matched, counts as a true detection for ``purity``. That radius is kept small because faint
    sources are dense (about 3e-3 per pix² by default): with the galaxies' 5 px, about a quarter
    of spurious detections would land near one by chance. ``purity_galaxies`` counts galaxy
    matches only. ``truth`` is an astropy Table; its columns are found without regard to case
    (:func:`galaxy_core.io.tables.with_column_names`).
    """
    from galaxy_core.io.tables import with_column_names

    if hasattr(truth, "colnames"):
        truth = with_column_names(truth, ("x", "y", "flux", "cls"), where="truth table")
    det = detect(np.asarray(image).sum(axis=0), nsigma=nsigma)
    if len(truth) and "cls" in getattr(truth, "colnames", ()) and (np.asarray(truth["cls"]) < 0).any():
        # faint sources and stars (cls < 0) are not galaxies to find; a detection of one still counts as real
        faint = truth[np.asarray(truth["cls"]) < 0]
        truth = truth[np.asarray(truth["cls"]) >= 0]
        fxy = np.column_stack([np.asarray(faint["x"]), np.asarray(faint["y"])])
    else:
        fxy = np.zeros((0, 2))
    txy = np.column_stack([np.asarray(truth["x"]), np.asarray(truth["y"])]) if len(truth) else np.zeros((0, 2))
    dxy = np.column_stack([det["x"], det["y"]])
    m = match(txy, dxy, radius=radius)
    flux = np.asarray(truth["flux"]) if len(truth) else np.zeros(0)
    bright = float(np.median(flux)) if bright_flux is None and len(flux) else float(bright_flux or 0.0)
    sel = flux >= bright
    frac = lambda a: float(a.mean()) if a.size else float("nan")  # noqa: E731
    kind = np.full(len(dxy), DETECTED_SPURIOUS, np.int8)
    kind[m[m >= 0]] = DETECTED_GALAXY
    if len(fxy) and len(dxy):  # detections not matched to a galaxy but to a faint source
        rest = np.flatnonzero(kind == DETECTED_SPURIOUS)
        if len(rest):
            mf = match(fxy, dxy[rest], radius=min(radius, source_radius))
            kind[rest[mf[mf >= 0]]] = DETECTED_SOURCE
    purity = float(np.count_nonzero(kind != DETECTED_SPURIOUS) / len(dxy)) if len(dxy) else float("nan")
    purity_galaxies = float(np.count_nonzero(m >= 0) / len(dxy)) if len(dxy) else float("nan")
    return DetectionReport(detections=det, matched=m, completeness=frac(m >= 0), completeness_bright=frac(m[sel] >= 0),
                           purity=purity, radius=radius, bright_flux=bright, purity_galaxies=purity_galaxies,
                           source_radius=min(radius, source_radius), kind=kind, galaxy_xy=txy)
