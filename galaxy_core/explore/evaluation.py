"""Measure a checkpoint against real galaxies: the steps behind the app's Evaluation and
Memorisation pages, usable from scripts too.

Each step is a plain function of arrays (so a caller can cache it) and the metric maths lives in
:mod:`galaxy_core.metrics`; this module only chooses data, converts ranges and units, and calls
those functions:

* :func:`training_data` / :func:`open_reference` find the data a checkpoint was trained on, or
  open another dataset, and :func:`check_compatible` says clearly when they cannot be compared
  (other bands, by number or by name, or another pixel unit: :func:`bands_and_unit_problem`);
* :func:`real_pair` (two disjoint real samples: one to compare with, one for the real-vs-real
  floor), :func:`real_sample` and :func:`generated_sample` draw the image sets in the model range;
* :func:`to_linear` turns model-range images into flux (physical data, via the stored stretch)
  or linear 0..1 brightness (8-bit images) for morphology and photometry;
* :func:`extractor_names` lists the feature extractors of :mod:`galaxy_core.metrics.features`
  that can be used here; every feature-space number is reported under a name that says which
  one produced it (:func:`feature_distances`);
* :func:`morphology`, :func:`colour_magnitude` measure per-image quantities;
* :func:`held_out_sample` and :func:`open_held_out` give real images never trained on, the reference
  of the memorisation check (:mod:`galaxy_core.metrics.memorisation`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from galaxy_core.data import load_dataset
from galaxy_core.data.prepared import PreparedDataset
from galaxy_core.errors import CheckpointError, DataError
from galaxy_core.io.stretch import stretch_from_dict
from galaxy_core.metrics.fid import fid_from_features, kid, metric_name
from galaxy_core.models.pretrained import Pretrained
from galaxy_core.progress import Progress, ProgressFn


# -------------------------------------------------------------------------- feature extractors

PIX8_DESCRIPTION = ("each band average-pooled to 8x8 pixels (C*64 features); needs no weights and tracks "
                    "colour, size and light profile; the live-training metric; not comparable to Inception FID")


def extractor_names() -> list[str]:
    """Extractors usable here, best first: ``galaxy`` (when the shipped encoder is present),
    ``inception`` (when ``$GALAXYGAN_INCEPTION`` names a weights file) and ``pix8`` (always)."""
    from galaxy_core.metrics.features import INCEPTION_ENV, default_encoder_path

    names = []
    if default_encoder_path().exists() and default_encoder_path().with_suffix(".safetensors").exists():
        names.append("galaxy")
    if os.environ.get(INCEPTION_ENV):
        names.append("inception")
    return names + ["pix8"]


def describe_extractor(name: str) -> str:
    """One line on what an extractor is (shown beside every metric computed with it)."""
    return {
        "galaxy": "the project's galaxy encoder (checkpoints/galaxy_encoder), trained on the built-in data; "
                  "numbers are comparable only with other fid_galaxy values",
        "inception": "Inception-v3 pool3 features from the local reference weights: the standard FID",
        "pix8": PIX8_DESCRIPTION,
    }.get(name, name)


def load_feature_fn(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """``images (N, C, H, W) in [-1, 1] -> features (N, D) float64`` for an extractor name, from
    the registry of :func:`galaxy_core.metrics.features.load_extractor` (whose errors say what
    to do when weights are missing)."""
    from galaxy_core.metrics.features import load_extractor

    return load_extractor(name)


def extract_features(x: np.ndarray, *, extractor: str = "pix8", fn: Callable | None = None,
                     batch: int = 256) -> np.ndarray:
    """Features of model-range images ``(N, C, H, W)``: float64 ``(N, D)``.

    ``fn`` is a loaded extractor (from :func:`load_feature_fn`) to reuse; otherwise ``extractor``
    is loaded for this call.
    """
    fn = fn or load_feature_fn(extractor)
    return fn(np.asarray(x, np.float32), batch=batch)  # the extractor batches the forward passes


def dataset_features(data: PreparedDataset, fn: Callable[[np.ndarray], np.ndarray], *, chunk: int = 1024) -> np.ndarray:
    """Features ``(N, D)`` of every image of a dataset, read ``chunk`` images at a time."""
    parts = [fn(data.to_model_range(slice(a, min(a + chunk, len(data))))) for a in range(0, len(data), chunk)]
    return np.concatenate(parts)


def feature_distances(real_feats: np.ndarray, fake_feats: np.ndarray, *, extractor: str) -> dict:
    """FID and KID between two feature sets, under names that record extractor and protocol.

    Returns
    -------
    dict
        ``{"fid_<extractor>_<n>v<m>": float, "kid_<extractor>_<n>v<m>": float,
        "kid_<extractor>_<n>v<m>_std": float}`` with ``n`` generated and ``m`` real samples
        (:func:`galaxy_core.metrics.fid.metric_name`).
    """
    n, m = len(fake_feats), len(real_feats)
    names = {kind: metric_name(kind, extractor=extractor, n=n, n_real=m) for kind in ("fid", "kid")}
    size = min(1000, max(2, min(n, m) // 2))  # half-size subsets, so their spread means something
    kid_mean, kid_std = kid(real_feats, fake_feats, subsets=50, subset_size=size)
    return {names["fid"]: fid_from_features(real_feats, fake_feats), names["kid"]: kid_mean,
            metric_name("kid", extractor=extractor, n=n, n_real=m, suffix="std"): kid_std}


# ------------------------------------------------------------------------------------- data


def training_data(meta: dict) -> dict:
    """The keyword arguments of :func:`open_reference` for a checkpoint's training data, so
    callers pass ``**training_data(meta)`` and a new data option needs no change at the call
    sites.

    Taken from the checkpoint's stored config (``meta["config"]["data"]``), so a ``sim``
    checkpoint trained on 2,000 galaxies with seed 3 gets exactly those back.
    """
    cfg = (meta.get("config") or {}).get("data") or {}
    data = meta.get("data") or {}
    spec = cfg.get("dataset") or data.get("name")
    if not spec:
        raise CheckpointError("the checkpoint does not say which data it was trained on")
    return {"spec": str(spec), "resolution": int(data.get("resolution") or cfg.get("resolution") or 64),
            "crop": float(cfg.get("crop", 1.0)), "count": cfg.get("count"), "seed": int(cfg.get("seed", 0)),
            "normalisation": cfg.get("normalisation", "asinh"), "neighbours": cfg.get("neighbours", "keep")}


def open_reference(spec: str | os.PathLike, *, resolution: int, crop: float = 1.0, count: int | None = None,
                   seed: int = 0, normalisation: str = "asinh", neighbours: str = "keep",
                   progress: Progress = False) -> PreparedDataset:
    """Open (preparing and caching on first use) a dataset to compare against; ``progress`` as in
    :func:`galaxy_core.data.sources.load_dataset` (silent by default)."""
    return load_dataset(spec, resolution=resolution, crop=crop, count=count if spec == "sim" else None,
                        seed=seed, normalisation=normalisation, neighbours=neighbours, progress=progress)


def check_compatible(model: Pretrained, data: PreparedDataset) -> None:
    """Raise :class:`DataError` when images of ``model`` and ``data`` cannot be compared: another
    number of bands, other band names or another pixel unit (:func:`bands_and_unit_problem`),
    or another resolution."""
    if data.num_bands != len(model.channels):
        raise DataError(f"{data.name}: {data.num_bands} channel(s) {data.channels}, but {model.name} makes "
                        f"{len(model.channels)} ({', '.join(model.channels)}); choose data with the same bands")
    problem = bands_and_unit_problem(data.channels, data.manifest.get("flux_unit"), of=model.name,
                                     like_channels=model.channels, like_unit=model.flux_unit)
    if problem:
        raise DataError(f"{data.name}: {problem}; choose data with the model's bands and unit")
    if data.resolution != model.resolution:
        raise DataError(f"{data.name}: {data.resolution} px images, but {model.name} makes {model.resolution} px; "
                        "prepare the data at the model's resolution")


def bands_and_unit_problem(channels, unit: str | None, *, of: str, like_channels, like_unit: str | None) -> str | None:
    """Why images in bands ``channels`` with pixel unit ``unit`` are not in those of ``of``, or None.

    Only what both sides say is compared: the band names when both name their bands (an
    unnamed FITS file's bands are called ``band1 .. bandn``, :func:`galaxy_core.io.fits.names_bands`),
    exactly and in order (SDSS ``r`` is not Johnson ``R``); the units (``BUNIT``, a card's
    ``flux_unit``) when both record one (:func:`galaxy_core.io.units.same_unit`). The numbers
    of bands are the caller's to check first.

    Parameters
    ----------
    channels, like_channels : sequence of str
        Band names of the images and of ``of``, in array order.
    unit, like_unit : str or None
        Their pixel units (None: not recorded).
    of : str
        What the images are compared with (a checkpoint's or a dataset's name), for the text.

    Returns
    -------
    str or None
        Sentence fragments naming both sides (``bands u, z, y, but m has g, r, i``), joined by
        ``"; "`` when both the bands and the unit differ.
    """
    from galaxy_core.io.fits import names_bands
    from galaxy_core.io.units import same_unit

    channels, like_channels = [str(c) for c in channels], [str(c) for c in like_channels]
    problems = []
    if names_bands(channels) and names_bands(like_channels) and channels != like_channels:
        order = " (the same bands in another order)" if sorted(channels) == sorted(like_channels) else ""
        problems.append(f"bands {', '.join(channels)}{order}, but {of} has {', '.join(like_channels)}")
    if unit and like_unit and not same_unit(unit, like_unit):
        problems.append(f"pixel unit {unit!r} (BUNIT), but {of} is in {like_unit!r}")
    return "; ".join(problems) or None


def real_sample(data: PreparedDataset, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random real images (all if fewer): (indices (n,), model-range float32 (n, C, H, W))."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(data), size=min(n, len(data)), replace=False))
    return idx, data.to_model_range(idx)


def real_pair(data: PreparedDataset, n: int, *, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Two disjoint random real samples of ``min(n, N // 2)`` images each.

    The first is compared with generated images, the second with the first: that second
    comparison is the real-vs-real floor a generator as good as the data would reach.

    Returns
    -------
    idx_a, x_a, idx_b, x_b : ndarray
        Sorted dataset indices and model-range float32 images ``(m, C, H, W)`` of each sample.
    """
    rng = np.random.default_rng(seed)
    m = min(n, len(data) // 2)
    perm = rng.permutation(len(data))
    idx_a, idx_b = np.sort(perm[:m]), np.sort(perm[m : 2 * m])
    return idx_a, data.to_model_range(idx_a), idx_b, data.to_model_range(idx_b)


def redshifts(data: PreparedDataset, idx: np.ndarray) -> np.ndarray | None:
    """Catalogue redshifts of images ``idx`` (None when the data has no redshift column)."""
    cat = data.catalog
    if cat is None or "redshift" not in cat.colnames:
        return None
    return np.asarray(cat["redshift"], float)[np.asarray(idx)]


def generated_sample(model: Pretrained, n: int, *, seed: int = 0, batch: int = 128,
                     progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` generated images: (latents (n, z_dim), model-range float32 (n, C, H, W))."""
    z = model.latents(seed, n).numpy()
    out = []
    for i in range(0, n, batch):
        out.append(model.generate(z[i : i + batch]))
        if progress is not None:
            progress(min(i + batch, n), n)
    return z, np.concatenate(out) if out else np.zeros((0, len(model.channels), model.resolution, model.resolution))


def to_linear(x: np.ndarray, *, stretch: dict | None) -> np.ndarray:
    """Model-range images to a linear brightness scale for morphology and photometry.

    Physical data with an asinh stretch: flux (the stretch inverted). 8-bit images (no
    stretch): ``(x + 1) / 2``, i.e. pixel value / 255 (the 8-bit data are taken as linear).
    A min-max normalised set cannot be turned back into flux; it is returned as ``(x + 1) / 2``
    and is only good for shape measurements.
    """
    st = stretch_from_dict(stretch)
    if st is not None:
        return st.inverse(x)
    return (np.asarray(x, np.float64) + 1.0) / 2.0


def restretch(x: np.ndarray, *, source: dict | None, target: dict | None) -> np.ndarray:
    """Model-range images of one dataset expressed in another's stretch (same bands)."""
    if source == target:
        return x
    src, dst = stretch_from_dict(source), stretch_from_dict(target)
    if src is None or dst is None:
        raise DataError("cannot compare pixel values of data with different non-invertible normalisations")
    return dst.forward(src.inverse(x))


# ------------------------------------------------------------------------ per-image quantities


# Column of morphology.measure_fast -> (short name, axis title with unit). r_half encloses half the
# Kron flux (a circular radius); the Kron flux is the flux inside 2.5 Kron radii.
MORPHOLOGY_COLUMNS = {
    "r_half": ("half-light radius", "half-light radius r50 (px)"),
    "ellipticity": ("ellipticity", "ellipticity 1 − b/a (dimensionless)"),
    "concentration": ("concentration", "C = 5 log10(r80 / r20) (dimensionless)"),
    "gini": ("Gini", "Gini coefficient (dimensionless)"),
    "kron_flux": ("Kron flux", "Kron flux (linear brightness units)"),
}


def morphology(flux: np.ndarray, *, progress: ProgressFn | None = None):
    """Fast segmentation morphology of each image (:func:`galaxy_core.metrics.morphology.measure_many`).

    Measured in this process (no worker pool), which suits the few hundred images of an
    interactive check. Returns an :class:`astropy.table.Table`.
    """
    from galaxy_core.metrics.morphology import measure_many

    return measure_many(flux, method="fast", workers=0, progress=progress or False)


def compare_morphology(real_table, fake_table, *, columns=tuple(MORPHOLOGY_COLUMNS)) -> dict:
    """Per column: KS and Wasserstein (:func:`galaxy_core.metrics.morphology.compare_distributions`)."""
    from galaxy_core.metrics.morphology import compare_distributions

    out = {}
    for col in columns:
        try:
            out[col] = compare_distributions(real_table[col], fake_table[col])
        except ValueError as e:  # too few successful measurements
            out[col] = {"error": str(e)}
    return out


def colour_magnitude(flux: np.ndarray, *, channels: list[str], zero_point: float | None,
                     progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apparent r magnitude and g − r colour of each image's central galaxy.

    Uses :func:`galaxy_core.metrics.photometry.band_magnitudes` (one Kron aperture for all
    bands). Needs bands named g and r; an image with no detection gives NaN.

    Returns
    -------
    mag_r, g_r : ndarray, (N,), float64, magnitudes
    """
    from galaxy_core.metrics.morphology import MeasurementError
    from galaxy_core.metrics.photometry import band_magnitudes

    bands = [c.lower() for c in channels]
    if "g" not in bands or "r" not in bands:
        raise DataError(f"colour-magnitude needs g and r bands; this data has {', '.join(channels)}")
    zp = 0.0 if zero_point is None else float(zero_point)
    mag_r, g_r = np.full(len(flux), np.nan), np.full(len(flux), np.nan)
    for i, im in enumerate(flux):
        try:
            m = band_magnitudes(im, zero_point=zp, bands=bands)
        except (MeasurementError, ValueError):
            m = None
        if m is not None:
            mag_r[i], g_r[i] = m["mag_r"], m["mag_g"] - m["mag_r"]
        if progress is not None and ((i + 1) % 16 == 0 or i + 1 == len(flux)):
            progress(i + 1, len(flux))
    return mag_r, g_r


# ------------------------------------------------------------------------------ memorisation


HELD_OUT_SEED_OFFSET = 1_000_003  # a sim held-out set uses the training seed + this: disjoint galaxies


def held_out_sample(meta: dict, train: PreparedDataset, n: int) -> tuple[np.ndarray | None, str]:
    """Real images the checkpoint never saw, in the training data's model range.

    For ``sim`` a fresh simulation with another seed (restretched to the training stretch);
    other built-in data have no independent set, so None is returned with the reason (give a
    folder to :func:`open_held_out` instead).

    Returns
    -------
    images : ndarray, (n, C, H, W), float32, or None
    description : str
    """
    spec = training_data(meta)
    if spec["spec"] != "sim":
        return None, (f"{train.name} has no images outside the training set; give real images that were not "
                      "trained on (galaxygan evaluate --held-out FOLDER) for a memorisation verdict")
    seed = spec["seed"] + HELD_OUT_SEED_OFFSET
    fresh = open_reference("sim", resolution=spec["resolution"], crop=spec["crop"], count=n, seed=seed,
                           normalisation=spec["normalisation"])
    x = restretch(fresh.to_model_range(), source=fresh.stretch, target=train.stretch)
    return x, f"{n} freshly simulated galaxies (seed {seed}), never seen in training"


def open_held_out(path: str | os.PathLike, *, train: PreparedDataset, crop: float = 1.0,
                  normalisation: str = "asinh", max_images: int | None = None) -> tuple[np.ndarray, str]:
    """Real images from a folder or FITS file that the checkpoint was not trained on.

    Prepared (and cached) at the training data's resolution and expressed in its stretch, so
    their distances to training images mean the same as those of generated samples.

    Parameters
    ----------
    path : path
        A folder of JPG/PNG/TIFF/FITS images or one FITS file.
    train : PreparedDataset
        The checkpoint's training data.
    crop : float
        Centre-crop fraction before resizing (use the training data's).
    normalisation : {"asinh", "minmax"}
        How flux images are brought to the model range (use the training data's: a held-out
        set prepared otherwise cannot be compared when the training data's is not invertible).
    max_images : int, optional
        Use at most this many (the first ones).

    Returns
    -------
    images : ndarray, (M, C, H, W), float32, model range
    description : str

    Raises
    ------
    DataError
        The folder has no usable images, or other bands (by number or name) or another pixel
        unit than the training data.
    """
    held = load_dataset(path, resolution=train.resolution, crop=crop, normalisation=normalisation, progress=False)
    if held.num_bands != train.num_bands:
        raise DataError(f"{path}: {held.num_bands} channel(s) {held.channels}, but the training data {train.name} has "
                        f"{train.num_bands} ({', '.join(train.channels)}); give held-out images with the same bands")
    if held.physical != train.physical:
        raise DataError(f"{path}: {'flux' if held.physical else '8-bit'} images, but the training data {train.name} "
                        f"is {'flux' if train.physical else '8-bit'} data; give held-out images of the same kind")
    problem = bands_and_unit_problem(held.channels, held.manifest.get("flux_unit"),
                                     of=f"the training data {train.name}", like_channels=train.channels,
                                     like_unit=train.manifest.get("flux_unit"))
    if problem:
        raise DataError(f"{path}: {problem}; give held-out images in the same bands and unit")
    n = len(held) if max_images is None else min(len(held), max_images)
    x = restretch(held.to_model_range(slice(0, n)), source=held.stretch, target=train.stretch)
    return x, f"{n} real images from {path}, not trained on"
