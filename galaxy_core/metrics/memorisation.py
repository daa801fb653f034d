"""Is a generator copying its training set? One pipeline for the report and both app pages.

For every generated sample the nearest training image is found exactly
(:func:`galaxy_core.metrics.vetting.nearest_matches`, ``method="brute"``) under three
distances. The verdict comes from one of them, :data:`DEFAULT_DISTANCE`, with a threshold
calibrated on *held-out* real images (never trained on): a generated sample is flagged when it
sits closer to a training image than :data:`THRESHOLD_PERCENTILE` % of held-out images do, and
the generator is called memorising when significantly more samples are flagged than that
chance rate (:func:`galaxy_core.metrics.vetting.memorisation_report`). The other distances are
shown beside it as evidence, each with one sentence on what it responds to
(:data:`DISTANCE_NOTES`). Without held-out images there is no verdict: the training images'
distances to each other are not a fair stand-in, since a generator that makes typical,
smooth galaxies sits closer to them than they sit to each other without copying anything.
Nor is there one when the held-out images sit much closer to the training set than training
images sit to each other (below :data:`REFERENCE_RATIO_RANGE`): they are then largely re-saved
or re-cut training galaxies, the threshold is too low to show copying, and "no sign of
memorisation" would mean nothing (a generator caught even so is still called memorising).

Steps, each usable on its own so an app can cache them:

1. :func:`search_space` - what the training set is searched in (its images, or its features);
2. :func:`nearest` - the k nearest training images of a batch of images, chunk by chunk with a
   progress callback (generated samples, held-out images);
3. :func:`training_baseline` - nearest *other* training image of a fixed training subset;
4. :func:`assess` - the statistics and the verdict from those distances (cheap).

:func:`memorisation_check` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from galaxy_core.metrics.vetting import memorisation_report, nearest_matches
from galaxy_core.progress import ProgressFn

__all__ = [
    "DEFAULT_DISTANCE",
    "DISTANCES",
    "DISTANCE_NOTES",
    "DISTANCE_UNITS",
    "REFERENCE_RATIO_RANGE",
    "THRESHOLD_PERCENTILE",
    "TRAIN_SUBSET_SEED",
    "assess",
    "feature_extractor",
    "image_names",
    "memorisation_check",
    "nearest",
    "search_space",
    "training_baseline",
    "verdict",
]


DEFAULT_DISTANCE = "cosine"
DISTANCES = ("cosine", "l1", "ssim")  # the verdict's distance first, then the evidence
THRESHOLD_PERCENTILE = 5.0  # % of held-out images closer than the threshold (chance flag rate)
TRAIN_SUBSET_SEED = 1  # which training images get a leave-one-out baseline distance
ALPHA = 0.01  # significance of the excess of flagged samples
COPY_RTOL = 1e-4  # a held-out image this much closer than typical training pairs is a training image
REFERENCE_RATIO_RANGE = (2 / 3, 1.5)  # held-out / training median distance outside it: not the same data
DISTANCE_NOTES = {
    "cosine": "1 − cosine similarity of galaxy-encoder features: responds to the galaxy's shape, size, colour and "
              "light profile and hardly to pixel noise or a shift of a pixel or two, so a copy scores near 0 even "
              "with fresh noise; it gives the verdict.",
    "l1": "mean |difference| of the pixels in the central half: responds to the brightness and exact placement of "
          "the galaxy's core, and runs low for any smooth generated image on noisy data, copy or not.",
    "ssim": "1 − SSIM (Wang et al. 2004) of the whole image: responds to local contrast and structure, including "
            "the noise pattern, so real noise keeps it high even between two images of the same galaxy.",
}
DISTANCE_UNITS = {
    "cosine": "1 − cos of encoder features (dimensionless, 0 = same direction)",
    "l1": "mean |Δ| in model range [-1, 1] over the central half",
    "ssim": "1 − SSIM (dimensionless, 0 = identical)",
}


def feature_extractor():
    """The extractor of the ``cosine`` distance: the shipped galaxy encoder, else ``pix8``."""
    from galaxy_core.errors import CheckpointError
    from galaxy_core.metrics.features import load_extractor

    try:
        return load_extractor("galaxy")
    except CheckpointError:
        return load_extractor("pix8")


def search_space(train, distance: str, *, extractor=None):
    """What the training set is searched in.

    Parameters
    ----------
    train : PreparedDataset
        The data the checkpoint was trained on.
    distance : {"cosine", "l1", "ssim"}
    extractor : Extractor, optional
        For ``cosine`` (default :func:`feature_extractor`).

    Returns
    -------
    ndarray
        ``(N, D)`` float64 features for ``cosine`` (cached on disk by
        :func:`galaxy_core.metrics.features.reference_statistics`), else the ``(N, C, H, W)``
        memory-mapped images in their stored dtype.
    """
    _check_distance(distance)
    if distance != "cosine":
        return train.images
    from galaxy_core.metrics.features import reference_statistics

    return reference_statistics(train, extractor or feature_extractor(), max_images=len(train))[2]


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; use one of {DISTANCES}")


def nearest(images: np.ndarray, space, distance: str, *, k: int = 1, extractor=None, chunk: int = 32,
            progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest training images of each image.

    Parameters
    ----------
    images : ndarray, (Q, C, H, W), float32, model range [-1, 1]
        Generated samples or held-out real images, in the training data's stretch.
    space : ndarray
        From :func:`search_space` for the same ``distance``.
    distance : {"cosine", "l1", "ssim"}
    k : int
        Neighbours per image.
    extractor : Extractor, optional
        For ``cosine``; must be the one ``space`` was built with.
    chunk : int
        Images per step.
    progress : callable, optional
        ``progress(done, total)`` in images.

    Returns
    -------
    indices : ndarray, (Q, k), int64
        Training indices, nearest first.
    distances : ndarray, (Q, k), float64
        In :data:`DISTANCE_UNITS`.
    """
    _check_distance(distance)
    if distance == "cosine":
        extractor = extractor or feature_extractor()
    idx, d = np.empty((len(images), k), np.int64), np.empty((len(images), k))
    for s in range(0, len(images), chunk):
        x = images[s : s + chunk]
        q = extractor(x) if distance == "cosine" else x
        idx[s : s + len(x)], d[s : s + len(x)] = nearest_matches(q, space, metric=distance, k=k, method="brute")
        if progress is not None:
            progress(min(s + chunk, len(images)), len(images))
    return idx, d


def training_baseline(space, distance: str, *, n: int, chunk: int = 32,
                      progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distance of ``n`` training images (fixed seed) to their nearest *other* training image.

    Returns
    -------
    subset : ndarray, (n,), int64
        Sorted training indices used (:data:`TRAIN_SUBSET_SEED`).
    distances : ndarray, (n,), float64
    """
    _check_distance(distance)
    rng = np.random.default_rng(TRAIN_SUBSET_SEED)
    subset = np.sort(rng.choice(len(space), size=min(n, len(space)), replace=False))
    out = np.empty(len(subset))
    for s in range(0, len(subset), chunk):
        sel = subset[s : s + chunk]
        q = np.asarray(space[sel])  # features, or images in their stored dtype
        idx, d = nearest_matches(q, space, metric=distance, k=2, method="brute")
        own = idx[:, 0] == sel
        out[s : s + len(sel)] = np.where(own, d[:, 1], d[:, 0])
        if progress is not None:
            progress(min(s + chunk, len(subset)), len(subset))
    return subset, out


def assess(gen_d, held_d, train_d, *, distance: str) -> dict:
    """Statistics of one distance and, for :data:`DEFAULT_DISTANCE` with held-out data, the verdict.

    Parameters
    ----------
    gen_d : array_like, (Q,), float
        Nearest-training distance of each generated sample.
    held_d : array_like, (M,), float, or None
        The same for held-out real images; None when there are none.
    train_d : array_like, (T,), float
        Nearest-other-training distances (:func:`training_baseline`).
    distance : str

    Returns
    -------
    dict
        ``distance``, ``note``, ``units``, ``median_gen``, ``median_train``, ``has_heldout``,
        ``gives_verdict``, ``report`` (from :func:`~galaxy_core.metrics.vetting.memorisation_report`
        with :data:`THRESHOLD_PERCENTILE`, or None without usable held-out data), ``memorised``
        (bool for the verdict's distance with held-out data, else None), ``sentence``, one
        line saying what the numbers show, and the checks of the held-out reference:
        ``heldout_copies`` (held-out images that are training images: distance below
        :data:`COPY_RTOL` times the training median; left out of the threshold, which they
        would pull to 0 and so hide copying), ``reference_ratio`` (held-out / training median
        distance, about 1 for new images of the same data) and ``reference_warning`` (a
        sentence when the ratio lies outside :data:`REFERENCE_RATIO_RANGE` or copies were left
        out, else None), ``reference_dependent`` (True when the ratio lies below that range and
        the samples would otherwise pass: the held-out images are then near-copies of training
        images, the threshold too low to show copying, and ``memorised`` is None: no verdict).

    Notes
    -----
    The threshold is only as fair as the held-out images: images of another survey, cut,
    stretch or resolution sit farther from the training set than new galaxies of the same data
    would, which raises the threshold and flags honest samples; training images among them
    lower it to zero and hide copying. Both are checked against the training images' own
    nearest-other distances, which new images of the same data match.
    """
    _check_distance(distance)
    gen_d, train_d = np.asarray(gen_d, float), np.asarray(train_d, float)
    out = {"distance": distance, "note": DISTANCE_NOTES[distance], "units": DISTANCE_UNITS[distance],
           "median_gen": float(np.median(gen_d)), "median_train": float(np.median(train_d)),
           "has_heldout": held_d is not None, "gives_verdict": distance == DEFAULT_DISTANCE,
           "report": None, "memorised": None}
    out.update(heldout_copies=0, reference_ratio=None, reference_warning=None, reference_dependent=False)
    given = held_d
    if held_d is not None:
        held_d = np.asarray(held_d, float)
        copies = held_d <= COPY_RTOL * out["median_train"]
        out["heldout_copies"] = int(copies.sum())
        held_d = held_d[~copies]
        if held_d.size:
            out["reference_ratio"] = float(np.median(held_d)) / out["median_train"] if out["median_train"] > 0 \
                else None
        out["reference_warning"] = _reference_warning(out, len(copies))
        if held_d.size < 2:
            held_d = None
    if held_d is None:
        n_given = 0 if given is None else len(given)
        why = ("no held-out images" if not n_given else
               "fewer than two held-out images that are not training images" if out["heldout_copies"] else
               "fewer than two held-out images")
        out["sentence"] = (f"median nearest-training distance {out['median_gen']:.3g} for generated samples, "
                           f"{out['median_train']:.3g} between training images; {why}, so no threshold "
                           "and no verdict")
        return out
    rep = memorisation_report(gen_d, held_d, train_d, percentile=THRESHOLD_PERCENTILE, alpha=ALPHA)
    out["report"] = rep
    if out["gives_verdict"]:
        out["memorised"] = rep["memorised"]
        low = REFERENCE_RATIO_RANGE[0]
        if not rep["memorised"] and out["reference_ratio"] is not None and out["reference_ratio"] < low:
            # held-out images this close to the training set are (re-saved, re-cut) training galaxies: the
            # threshold is too low, so "no sign" means nothing; a "memorising" stays (the low threshold only
            # makes flagging harder)
            out["memorised"] = None
            out["reference_dependent"] = True
    out["sentence"] = (f"{rep['n_flagged']} of {len(gen_d)} generated samples ({rep['fraction_flagged']:.0%}) sit closer "
                       f"to a training image than {THRESHOLD_PERCENTILE:.0f} % of held-out images do "
                       f"(threshold {rep['threshold']:.3g}; {rep['expected_fraction']:.0%} expected by chance, "
                       f"excess p = {rep['excess_p']:.2g}); median ratio generated / held-out "
                       f"{rep['median_ratio']:.2f}")
    return out


def _reference_warning(out: dict, n_held: int) -> str | None:
    """One sentence on what is wrong with the held-out reference, or None (see :func:`assess`)."""
    parts = []
    if out["heldout_copies"]:
        parts.append(f"{out['heldout_copies']} of the {n_held} held-out images are training images (nearest-training "
                     "distance 0) and were left out of the threshold")
    ratio, (low, high) = out["reference_ratio"], REFERENCE_RATIO_RANGE
    if ratio is not None and ratio > high:
        parts.append(f"the held-out images sit {ratio:.2f} times as far from the training set as training images sit "
                     "from each other, so they are probably not new images of the same data (another survey, cut, "
                     "stretch or resolution); the threshold is then too high and flags honest samples")
    elif ratio is not None and ratio < low:
        parts.append(f"the held-out images sit only {ratio:.2f} times as far from the training set as training images "
                     "sit from each other, so many may be near-copies of training images; the threshold is then too "
                     "low and can hide copying")
    return "; ".join(parts) if parts else None


def image_names(data, idx) -> list[str]:
    """A name a person can find each training image by: its file, else dataset and index.

    Folders and FITS sources keep the file name in the catalogue's ``file`` column; the
    built-in sets have none, so ``"hdf #12"`` (index in the prepared set) is used.
    """
    idx = np.atleast_1d(np.asarray(idx, int))
    cat = data.catalog
    if cat is not None and "file" in cat.colnames:
        files = cat["file"]
        return [str(files[i]) for i in idx]
    return [f"{data.name} #{i}" for i in idx]


def verdict(results: dict) -> tuple[bool | None, str]:
    """The verdict and a sentence from :func:`assess` results keyed by distance.

    Only :data:`DEFAULT_DISTANCE` with held-out data gives one; otherwise ``(None, why not)``.
    """
    main = results.get(DEFAULT_DISTANCE)
    if main is not None and main["report"] is not None and main.get("reference_dependent"):
        return None, (f"No verdict: the held-out reference is not independent of the training set: "
                      f"{main['reference_warning']}. Give real images that were never trained on, and no "
                      f"other copies of training galaxies ({main['sentence']}).")
    if main is None or main["report"] is None:
        if main is None:
            why = f"the {DEFAULT_DISTANCE} distance, which gives it, was not computed"
        elif main.get("heldout_copies"):
            why = (f"{main['reference_warning']}, which leaves fewer than two held-out images for a threshold; give "
                   "real images that were never trained on")
        elif main.get("has_heldout"):
            why = ("a threshold needs at least two held-out images; give more real images that were never "
                   "trained on")
        else:
            why = ("without real images that were never trained on there is no fair threshold; give some "
                   "(galaxygan evaluate --held-out FOLDER, or a held-out folder on the Memorisation page) to get one")
        return None, f"No verdict: {why}."
    caveat = f" Check the held-out images: {main['reference_warning']}." if main.get("reference_warning") else ""
    if main["memorised"]:
        return True, ("Memorising: more generated samples sit on top of training images than chance allows "
                      f"({main['sentence']}).{caveat}")
    return False, ("No sign of memorisation: generated samples are no closer to training images than unseen real "
                   f"galaxies are ({main['sentence']}).{caveat}")


def memorisation_check(generated: np.ndarray, train, *, held_out: np.ndarray | None, held_out_about: str,
                       distances: Sequence[str] = DISTANCES, k: int = 3, n_baseline: int | None = None,
                       progress: Callable[[str, int, int], None] | None = None) -> dict:
    """The whole check: nearest training images under every distance, baselines and the verdict.

    Parameters
    ----------
    generated : ndarray, (Q, C, H, W), float32, model range
        Generated samples.
    train : PreparedDataset
        The checkpoint's training data (searched).
    held_out : ndarray, (M, C, H, W), float32, model range, or None
        Real images never trained on, in the training data's stretch; None gives no verdict.
    held_out_about : str
        Where they come from, for the report.
    distances : sequence of str
        Distances to compute; :data:`DEFAULT_DISTANCE` must be among them for a verdict.
    k : int
        Neighbours kept per generated sample.
    n_baseline : int, optional
        Training images in the leave-one-out baseline (default ``len(generated)``).
    progress : callable, optional
        ``progress(stage, done, total)`` with stage a short text.

    Returns
    -------
    dict
        ``compared`` (a sentence: what was compared with what), ``memorised`` (bool or None),
        ``verdict`` (a sentence) and per distance ``results[d]``: :func:`assess` plus
        ``indices`` and ``distances`` ``(Q, k)``, ``heldout_d`` and ``train_d``.
    """
    if len(generated) < 1:
        raise ValueError("need at least one generated sample")
    n_base = len(generated) if n_baseline is None else n_baseline
    ext = feature_extractor() if "cosine" in distances else None
    results = {}
    for dist in distances:
        def step(stage, _d=dist):
            return None if progress is None else (lambda done, total: progress(f"{_d}: {stage}", done, total))

        space = search_space(train, dist, extractor=ext)
        idx, d = nearest(generated, space, dist, k=k, extractor=ext, progress=step("generated samples"))
        held_d = None
        if held_out is not None:
            held_d = nearest(held_out, space, dist, k=1, extractor=ext, progress=step("held-out images"))[1][:, 0]
        _, train_d = training_baseline(space, dist, n=n_base, progress=step("training baseline"))
        results[dist] = {**assess(d[:, 0], held_d, train_d, distance=dist), "indices": idx, "distances": d,
                         "heldout_d": held_d, "train_d": train_d}
    n_held = 0 if held_out is None else len(held_out)
    main = results.get(DEFAULT_DISTANCE) or {}
    copies = main.get("heldout_copies", 0)
    if held_out is None:
        reference = f"no held-out real images ({held_out_about})"
    elif main.get("report") is None:
        reference = f"no threshold from the {n_held} held-out images given ({held_out_about})"
    else:
        reference = (f"threshold from {n_held - copies} held-out real images ({held_out_about})"
                     + (f"; {copies} more held-out images are training images and were left out" if copies else ""))
    compared = (f"{len(generated)} generated samples searched against all {len(train)} training images of "
                f"{train.name}; " + reference)
    memorised, verdict_text = verdict(results)
    return {"compared": compared, "memorised": memorised, "verdict": verdict_text, "heldout_about": held_out_about,
            "n_heldout": n_held, "results": results}
