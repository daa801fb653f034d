"""Power-spectrum realism score of sky images and a classifier two-sample test.

The ETH two-stage sparse-sky paper scores generated skies with a model trained on their power
spectra. Here the features of a square tile are

1. the azimuthally averaged 1-D power spectrum of the Hann-windowed, mean-subtracted tile,
   ``log10 P(k)`` for integer wavenumbers ``k = 1 .. N/2`` (cycles per tile), and
2. the histogram of pixel intensities (:func:`luminance`: the mean of the bands as the field's
   8-bit composite records them) in :data:`HIST_BINS` equal bins, as ``log10(density + 1e-3)``,

and a gradient-boosted tree classifier (scikit-learn ``HistGradientBoostingClassifier``, fixed
seed, no early stopping, so fitting is deterministic) separates real ``hdf`` tiles (label 1)
from generated or baseline tiles (label 0). The **realism score** of a tile is the
classifier's probability that it is real; an image's score is the mean over its tiles. The
cross-validated accuracy of the classifier is a classifier two-sample test (Lopez-Paz &
Oquab 2017): 0.5 means the two sets cannot be told apart.

The shipped scorer (``checkpoints/realism_hdf.npz`` + ``.json``) stores only the training
features (no pickle); :func:`load_scorer` refits the classifier from them, which takes
about a second and gives the same model every time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TILE = 128
HIST_BINS = 32
SCORER_VERSION = "realism/2"  # 2: 8-bit luminance (each band saturates on its own)
CLASSIFIER = {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 15, "l2_regularization": 1.0,
              "early_stopping": False, "random_state": 0}


def ring_index(n: int) -> np.ndarray:
    """(n, n) int64 radial wavenumber ``round(|k|)`` in cycles per image, in the FFT layout of
    ``np.fft.fft2`` of an (n, n) image: the ring each Fourier coefficient is averaged into."""
    f = np.fft.fftfreq(n) * n
    return np.rint(np.hypot(f[:, None], f[None, :])).astype(np.int64)


def power_spectrum_1d(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged power spectrum of a square image.

    Parameters
    ----------
    image : array (N, N), float
        N even.

    Returns
    -------
    k : ndarray (N/2,), int
        Wavenumbers 1 .. N/2 in cycles per image.
    power : ndarray (N/2,), float64
        Mean of ``|FFT(w * (image - mean))|^2 / sum(w^2)`` over the ring ``round(|k|) = k``,
        with ``w`` the 2-D Hann window. A sinusoid of ``f`` cycles per image peaks at ``k = f``.
    """
    img = np.asarray(image, np.float64)
    n = img.shape[0]
    if img.ndim != 2 or img.shape[1] != n or n % 2:
        raise ValueError(f"power_spectrum_1d: need a square image of even side, got shape {img.shape}")
    w1 = np.hanning(n + 1)[:-1]  # periodic Hann
    w = w1[:, None] * w1[None, :]
    f = np.fft.fft2((img - img.mean()) * w)
    p2 = np.abs(f) ** 2 / np.sum(w**2)
    kr = ring_index(n)
    sums = np.bincount(kr.ravel(), weights=p2.ravel(), minlength=n)
    counts = np.bincount(kr.ravel(), minlength=n)
    k = np.arange(1, n // 2 + 1)
    return k, sums[k] / np.maximum(counts[k], 1)


def levels_8bit(sky: np.ndarray) -> np.ndarray:
    """(3, H, W) sky in field units -> (3, H, W) uint8: the levels the field's 8-bit composite
    records, each band clipped to [0, 1] on its own (a band saturates at 255 whatever the others
    hold) and rounded to the nearest level. An 8-bit image divided by 255 comes back as its own
    levels. The one conversion shared by the realism scorer (:func:`luminance`) and the
    composer's PNG (:func:`galaxy_core.sky.mosaic.sky_to_rgb8`). Rounded in float64, one band
    at a time, so an 8000 px sky never holds a float64 copy of all three bands."""
    sky = np.asarray(sky)
    out = np.empty(sky.shape, np.uint8)
    for b in range(sky.shape[0]):
        out[b] = np.rint(np.clip(sky[b].astype(np.float64), 0.0, 1.0) * 255.0)
    return out


def luminance(sky: np.ndarray) -> np.ndarray:
    """(3, H, W) R, G, B sky in field units -> (H, W) float64 mean of the bands'
    :func:`levels_8bit` / 255, in [0, 1]. The real tiles come from an 8-bit composite, so a
    composed (float, unbounded) sky is scored as that composite would record it, the same as its
    PNG: clipping the band mean instead would put a pixel with one saturated band in the top
    histogram bin, where the field has it lower."""
    return levels_8bit(sky).mean(axis=0, dtype=np.float64) / 255.0


def tile_features(lum: np.ndarray) -> np.ndarray:
    """(TILE, TILE) luminance -> (TILE/2 + HIST_BINS,) feature vector (see module docstring)."""
    _, p = power_spectrum_1d(lum)
    hist, _ = np.histogram(lum, bins=HIST_BINS, range=(0.0, 1.0), density=True)
    return np.concatenate([np.log10(p + 1e-12), np.log10(hist + 1e-3)])


def tiles_of(lum: np.ndarray, *, tile: int = TILE) -> list[np.ndarray]:
    """Non-overlapping ``tile`` squares of a (H, W) image, row-major."""
    h, w = lum.shape
    return [lum[y : y + tile, x : x + tile] for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]


def image_features(sky: np.ndarray, *, tile: int = TILE) -> np.ndarray:
    """(n_tiles, n_features) of a (3, H, W) sky."""
    return np.stack([tile_features(t) for t in tiles_of(luminance(sky), tile=tile)])


def real_hdf_tiles(n: int, *, seed: int = 0, tile: int = TILE, columns: tuple[int, int] | None = None) -> np.ndarray:
    """(n, tile, tile) luminance tiles of the deep field at random offsets and symmetries.

    ``columns`` = (x0, x1) restricts the tiles to that band of field columns (e.g. to keep a
    held-out part of the field for testing the scorer)."""
    from galaxy_core.data.hdf import hdf_field

    lum = luminance(np.moveaxis(hdf_field().astype(np.float64) / 255.0, -1, 0))
    if columns is not None:
        lum = lum[:, columns[0] : columns[1]]
    rng = np.random.default_rng(seed)
    h, w = lum.shape
    out = np.empty((n, tile, tile))
    for i in range(n):
        y, x, k = rng.integers(0, h - tile + 1), rng.integers(0, w - tile + 1), rng.integers(0, 8)
        t = np.rot90(lum[y : y + tile, x : x + tile], k % 4)
        out[i] = t[:, ::-1] if k >= 4 else t
    return out


def real_hdf_tiles_grouped(n: int, *, seed: int = 0, tile: int = TILE, bands: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(n, tile, tile) luminance tiles of the deep field, tile ``i`` lying wholly inside
    column band ``i % bands`` (the field's 1000 columns cut into ``bands`` equal bands), at a
    random row, column and symmetry; and (n,) the band of each tile. Tiles of different bands
    never overlap, so a cross-validation grouped by band (:func:`classifier_test` with
    ``groups``) never tests on pixels it trained on (:func:`banded_tiles` on the field)."""
    from galaxy_core.data.hdf import hdf_field

    lum = luminance(np.moveaxis(hdf_field().astype(np.float64) / 255.0, -1, 0))
    return banded_tiles(lum, n, seed=seed, tile=tile, bands=bands)


def banded_tiles(lum: np.ndarray, n: int, *, seed: int = 0, tile: int = TILE,
                 bands: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(n, tile, tile) tiles of one (H, W) image, tile ``i`` wholly inside column band
    ``i % bands`` (the W columns cut into ``bands`` equal bands) at a random row, column and
    symmetry (one of the 8 turns and flips); and (n,) int, the band of each tile.

    Raises
    ------
    ValueError
        A band or the image is narrower or lower than one tile.
    """
    h, w = lum.shape
    bw = w // bands
    if bw < tile or h < tile:
        raise ValueError(f"banded_tiles: {bands} bands of {bw} x {h} px cannot hold {tile} px tiles")
    rng = np.random.default_rng(seed)
    out, group = np.empty((n, tile, tile)), np.arange(n) % bands
    for i in range(n):
        b = group[i]
        y, x, k = rng.integers(0, h - tile + 1), rng.integers(b * bw, (b + 1) * bw - tile + 1), rng.integers(0, 8)
        t = np.rot90(lum[y : y + tile, x : x + tile], k % 4)
        out[i] = t[:, ::-1] if k >= 4 else t
    return out, group


def grouped_classifier_test(real: np.ndarray, real_groups: np.ndarray, fakes, *, folds: int = 4) -> dict:
    """:func:`classifier_test` with no leakage between folds: real tiles grouped as given
    (e.g. by column band, :func:`banded_tiles`), generated tiles grouped by the image they
    come from (image ``i`` in group ``i % folds``), ``folds``-fold grouped cross-validation.

    Parameters
    ----------
    real : (n_real, n_features) array; real_groups : (n_real,) int in ``0 .. folds - 1``
    fakes : sequence of (n_tiles_i, n_features) arrays, one per generated image
        (:func:`image_features`).

    Returns
    -------
    dict
        As :func:`classifier_test`.
    """
    fake_groups = np.concatenate([np.full(len(f), i % folds) for i, f in enumerate(fakes)])
    return classifier_test(real, np.concatenate(fakes), folds=folds, groups=(real_groups, fake_groups))


def one_field_null(make_sky, n: int, *, seed: int = 0, field_shape: tuple[int, int] | None = None,
                   tile: int = TILE, bands: int = 4) -> dict:
    """The grouped classifier test of a generator against one field drawn by itself: what a
    *perfect* generator of the reference would score when, as with the deep field, the
    reference is a single image.

    The reference is one sky of ``field_shape`` drawn by ``make_sky`` (seed ``seed``), cut into
    ``4 n`` tiles by column band exactly as :func:`real_hdf_tiles_grouped` cuts the deep field;
    the "generated" side is ``n`` independent skies of ``2 tile`` px (seeds ``seed + 1 ..
    seed + n``, four tiles each), grouped by sky; the test is :func:`classifier_test` with
    ``bands`` folds (:func:`grouped_classifier_test`), as the realism table runs it. Both sides come from one process, so any
    accuracy above 0.5 would be what the one-image reference costs even a perfect generator.

    Parameters
    ----------
    make_sky : callable (height, width, seed) -> (3, height, width) float array in field units
        E.g. ``lambda h, w, s: compose_sky(height=h, width=w, ..., seed=s).image``.
    n : int
        Generated skies (``4 n`` tiles a side).
    field_shape : (H, W), optional
        Default: the deep field's (872, 1000).

    Returns
    -------
    dict
        ``accuracy``, ``accuracy_std`` (over the folds), ``n_real``, ``n_fake``.

    Raises
    ------
    ValueError
        ``field_shape`` too small for ``bands`` column bands of ``tile`` px tiles.
    """
    if field_shape is None:
        from galaxy_core.data.hdf import hdf_field

        field_shape = hdf_field().shape[:2]
    field = luminance(np.asarray(make_sky(int(field_shape[0]), int(field_shape[1]), seed), np.float64))
    tiles, band = banded_tiles(field, 4 * n, seed=seed, tile=tile, bands=bands)
    real = np.stack([tile_features(t) for t in tiles])
    fakes = [image_features(np.asarray(make_sky(2 * tile, 2 * tile, seed + 1 + i)), tile=tile) for i in range(n)]
    out = grouped_classifier_test(real, band, fakes, folds=bands)
    return {k: out[k] for k in ("accuracy", "accuracy_std", "n_real", "n_fake")}


def fit_classifier(x_real: np.ndarray, x_fake: np.ndarray):
    """HistGradientBoostingClassifier (settings :data:`CLASSIFIER`) with real = 1, fake = 0."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from threadpoolctl import threadpool_limits

    x = np.concatenate([x_real, x_fake])
    y = np.concatenate([np.ones(len(x_real)), np.zeros(len(x_fake))]).astype(np.int64)
    with threadpool_limits(1):  # OpenMP on a busy machine is many times slower than one thread
        return HistGradientBoostingClassifier(**CLASSIFIER).fit(x, y)


def classifier_test(x_real: np.ndarray, x_fake: np.ndarray, *, folds: int = 5, seed: int = 0,
                    groups: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Classifier two-sample test: stratified k-fold accuracy of real-vs-fake classification.

    ``groups`` = (real groups (n_real,), fake groups (n_fake,)) int: grouped k-fold instead
    (:class:`sklearn.model_selection.GroupKFold`, ``folds`` = number of groups; a real and a
    fake group with the same number share a fold), so tiles that overlap or come from one image
    are never split between training and test (:func:`real_hdf_tiles_grouped`). The plain
    stratified test draws real tiles that overlap each other into both sides and so can score
    a classifier that memorises the one real field.

    Returns
    -------
    dict
        ``accuracy`` (mean over folds; 0.5 = indistinguishable), ``accuracy_std``, ``folds``,
        ``n_real``, ``n_fake``.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score
    from threadpoolctl import threadpool_limits

    x = np.concatenate([x_real, x_fake])
    y = np.concatenate([np.ones(len(x_real)), np.zeros(len(x_fake))]).astype(np.int64)
    g = None
    if groups is not None:
        g = np.concatenate([np.asarray(groups[0]), np.asarray(groups[1])]).astype(np.int64)
        cv = GroupKFold(n_splits=folds)
    else:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(1):
        acc = cross_val_score(HistGradientBoostingClassifier(**CLASSIFIER), x, y, groups=g, cv=cv, scoring="accuracy")
    return {"accuracy": float(acc.mean()), "accuracy_std": float(acc.std()), "folds": folds,
            "n_real": int(len(x_real)), "n_fake": int(len(x_fake))}


def real_vs_real_grouped(n: int, *, seed: int = 0, tile: int = TILE) -> dict:
    """Grouped classifier two-sample test of the deep field against itself: what the grouped
    test (:func:`classifier_test` with ``groups``) gives a perfect generator.

    ``n`` tiles of the field's 4 column bands (:func:`real_hdf_tiles_grouped`, ``n / 4`` per
    band). For each of the three ways to split the bands into two pairs, the tiles of one pair
    are labelled "real" and those of the other "fake", and a 2-fold cross-validation grouped by
    band trains on one band of each side and tests on the other two, so no test tile shares
    pixels with a training tile. 0.5 means the field's bands are indistinguishable, i.e. the
    field is homogeneous enough at this tile size for the grouped test to reach 0.5.

    Returns
    -------
    dict
        ``accuracy`` (mean of the three splits), ``splits`` (the three accuracies), ``n``.
    """
    tiles, band = real_hdf_tiles_grouped(n, seed=seed, tile=tile, bands=4)
    feats = np.stack([tile_features(t) for t in tiles])
    accs = []
    for a, b in (((0, 2), (1, 3)), ((0, 1), (2, 3)), ((0, 3), (1, 2))):
        ra, fb = np.isin(band, a), np.isin(band, b)
        groups = (np.where(band[ra] == a[0], 0, 1), np.where(band[fb] == b[0], 0, 1))
        accs.append(classifier_test(feats[ra], feats[fb], folds=2, groups=groups)["accuracy"])
    return {"accuracy": float(np.mean(accs)), "splits": [float(a) for a in accs], "n": int(n)}


@dataclass
class RealismScorer:
    """A fitted real-vs-generated classifier on tile features.

    Attributes
    ----------
    classifier : sklearn estimator
    x_real, x_fake : ndarray
        The training features (kept so the scorer can be saved without pickle).
    meta : dict
        Provenance: what the fake tiles were, tile size, version, cross-validated accuracy.
    """

    classifier: object
    x_real: np.ndarray
    x_fake: np.ndarray
    meta: dict

    def tile_scores(self, features: np.ndarray) -> np.ndarray:
        """(n,) probability of being real, in [0, 1]."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self.classifier.predict_proba(np.atleast_2d(features))[:, 1]

    @property
    def tile(self) -> int:
        """Side of the square tiles the scorer reads, in pixels."""
        return int(self.meta.get("tile", TILE))

    def score(self, sky: np.ndarray) -> float:
        """Realism score of a (3, H, W) sky: the mean over its :attr:`tile` px tiles.

        Raises
        ------
        ValueError
            The sky is smaller than one tile in either direction.
        """
        if min(np.shape(sky)[1:]) < self.tile:
            raise ValueError(f"a {np.shape(sky)[2]} x {np.shape(sky)[1]} px sky holds no {self.tile} px tile "
                             "to score")
        return float(self.tile_scores(image_features(sky, tile=self.tile)).mean())

    def save(self, path: str | Path) -> Path:
        """Write ``PATH.npz`` (features) and ``PATH.json`` (meta); no pickle."""
        from galaxy_core.io.atomic import atomic_open, atomic_write_json

        from galaxy_core.paths import with_suffix_of

        jpath, npath = (with_suffix_of(path, s, SCORER_SUFFIXES) for s in SCORER_SUFFIXES)
        with atomic_open(npath, "wb") as f:  # a killed save leaves the old file whole
            np.savez_compressed(f, x_real=self.x_real, x_fake=self.x_fake)
        atomic_write_json(jpath, {"kind": "realism", "version": SCORER_VERSION, "classifier": CLASSIFIER, **self.meta})
        return jpath


SCORER_SUFFIXES = (".json", ".npz")  # a saved scorer's two files


def train_scorer(x_real: np.ndarray, x_fake: np.ndarray, *, meta: dict | None = None) -> RealismScorer:
    """Fit a :class:`RealismScorer` on real and fake tile features."""
    return RealismScorer(fit_classifier(x_real, x_fake), x_real, x_fake, dict(meta or {}))


def load_scorer(path: str | Path | None = None) -> RealismScorer:
    """Refit the saved scorer from its features (default: the shipped ``realism_hdf``).

    Raises
    ------
    CheckpointError
        Missing files or a different format version (rebuild it with
        ``galaxygan sky realism-fit``).
    """
    from galaxy_core.errors import CheckpointError
    from galaxy_core.paths import checkpoints_dir, with_suffix_of

    path = Path(path) if path else checkpoints_dir() / "realism_hdf.json"
    jpath, npath = (with_suffix_of(path, s, SCORER_SUFFIXES) for s in SCORER_SUFFIXES)
    if not jpath.exists() or not npath.exists():
        raise CheckpointError(f"{jpath}: realism scorer missing (needs .json and .npz); "
                              "build it with `galaxygan sky realism-fit`")
    meta = json.loads(jpath.read_text())
    if meta.get("version") != SCORER_VERSION:
        raise CheckpointError(f"{jpath}: scorer version {meta.get('version')!r}, expected {SCORER_VERSION!r}; "
                              "rebuild it with `galaxygan sky realism-fit`")
    with np.load(npath) as z:
        x_real, x_fake = z["x_real"], z["x_fake"]
    return train_scorer(x_real, x_fake, meta=meta)


# --------------------------------------------------------------------------- diagnostics


def feature_names(*, tile: int = TILE) -> list[str]:
    """Names of the :func:`tile_features` columns: ``P1 .. P{tile/2}`` (log power at k cycles
    per tile), then ``H0 .. H31`` (log density of the luminance bin [b/32, (b+1)/32))."""
    return [f"P{k}" for k in range(1, tile // 2 + 1)] + [f"H{b}" for b in range(HIST_BINS)]


def feature_shifts(x_real: np.ndarray, x_fake: np.ndarray, *, top: int = 10) -> list[dict]:
    """Which features tell two tile sets apart (a diagnostic; the scorer is unchanged).

    Per feature: the standardised mean difference ``d = (mean_fake - mean_real) / pooled sd``
    and the two-sample Kolmogorov-Smirnov statistic. Returns the ``top`` features by ``|d|``,
    each ``{"feature", "d", "ks", "real_mean", "fake_mean"}``."""
    from scipy.stats import ks_2samp

    xr, xf = np.asarray(x_real, float), np.asarray(x_fake, float)
    pooled = np.sqrt(0.5 * (xr.var(0) + xf.var(0))) + 1e-9
    d = (xf.mean(0) - xr.mean(0)) / pooled
    names = feature_names(tile=2 * (xr.shape[1] - HIST_BINS))
    out = []
    for i in np.argsort(-np.abs(d))[:top]:
        out.append({"feature": names[i], "d": float(d[i]), "ks": float(ks_2samp(xr[:, i], xf[:, i]).statistic),
                    "real_mean": float(xr[:, i].mean()), "fake_mean": float(xf[:, i].mean())})
    return out
