"""Feature-space distances between a real and a generated image set.

Every function here works on plain feature arrays ``(N, D)`` (float, any units) produced by
some extractor; which extractor it was is part of the metric's *name*
together with the protocol (:func:`metric_name`, e.g. ``fid_galaxy_256v5k``: 256 generated
samples against 5,000 real images) so numbers from different extractors are never
mixed up.

==========================================  =============================================
function                                    reference
==========================================  =============================================
:func:`frechet_distance`                    Heusel et al. 2017, NeurIPS (FID); Dowson &
                                            Landau 1982 (Fréchet distance of Gaussians)
:func:`kid`                                 Bińkowski et al. 2018, ICLR (KID)
:func:`precision_recall_density_coverage`   Kynkäänniemi et al. 2019, NeurIPS (P/R);
                                            Naeem et al. 2020, ICML (density/coverage)
:func:`mifid`                               Bai et al. 2021, KDD (MiFID, Kaggle
                                            "Generative Dog Images" competition)
==========================================  =============================================
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

__all__ = [
    "METRICS",
    "METRIC_KINDS",
    "MetricName",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "kid",
    "metric_name",
    "parse_metric_name",
    "mifid",
    "mifid_from_features",
    "precision_recall_density_coverage",
]


# --------------------------------------------------------------------------- small helpers


def _as_features(x, name: str) -> np.ndarray:
    """Features as float64 ``(N, D)``; a 1-D array is one feature per sample."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) feature array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values; check the feature extractor")
    return x


def _rng(rng) -> np.random.Generator:
    """A Generator from a Generator, a seed, or None (seed 0, so results are reproducible)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else rng)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues >= 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    w = np.clip(w, 0.0, None)  # round-off can make tiny eigenvalues negative
    return (v * np.sqrt(w)) @ v.T


def _pairwise_sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``(len(a), len(b))``, clipped at 0 against round-off."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


# ------------------------------------------------------------------------------------- FID


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set, the sufficient statistics of the FID.

    Parameters
    ----------
    features : array_like, (N, D), float
        One feature vector per image; N >= 2.

    Returns
    -------
    mu : ndarray, (D,), float64
        Sample mean.
    sigma : ndarray, (D, D), float64
        Unbiased sample covariance (divides by N - 1).
    """
    f = _as_features(features, "features")
    if len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(f)}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((sigma1 sigma2)^(1/2))`` via a symmetric eigen-decomposition.

    ``sigma1 sigma2`` is similar to the symmetric PSD matrix ``s1h sigma2 s1h`` with
    ``s1h = sigma1^(1/2)``, so both have the same non-negative eigenvalues; the trace of the
    square root is the sum of their square roots. No complex arithmetic is involved.
    """
    s1h = _sqrt_psd(sigma1)
    m = s1h @ sigma2 @ s1h
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, *, eps: float) -> float:
    """``tr((sigma1 sigma2)^(1/2))`` via :func:`scipy.linalg.sqrtm` (the reference FID recipe).

    A non-finite result (nearly singular product) is retried with ``eps`` added to both
    diagonals; an imaginary part is dropped only when it is negligible (``< 1e-3`` relative to
    the largest diagonal entry), otherwise :class:`ValueError` is raised.
    """
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        offset = eps * np.eye(len(sigma1))
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        scale = max(float(np.abs(np.diagonal(covmean)).max()), 1e-12)
        imag = float(np.abs(np.diagonal(covmean).imag).max())
        if imag > 1e-3 * scale:
            raise ValueError(
                f"matrix square root has a significant imaginary part ({imag:.3g}); the "
                "covariances are probably not positive semi-definite (too few samples for the "
                "feature dimension?). Use method='eigh'."
            )
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, method: str = "eigh", eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein) distance between two Gaussians, the FID formula.

    ``d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``
    (Dowson & Landau 1982; used on Inception features as the FID by Heusel et al. 2017). The
    value returned is ``d^2`` in squared feature units, as is conventional for the FID.

    Parameters
    ----------
    mu1, mu2 : array_like, (D,), float
        Means (from :func:`feature_statistics`).
    sigma1, sigma2 : array_like, (D, D), float
        Covariances, symmetric positive semi-definite.
    method : {"eigh", "sqrtm"}
        How the trace of the matrix square root is computed. ``"eigh"`` (default) uses
        ``tr((s1 s2)^(1/2)) = sum sqrt(eig(s1^(1/2) s2 s1^(1/2)))``: every matrix is symmetric, so
        it is real and stable even for singular covariances (N < D). ``"sqrtm"`` is the
        reference recipe with :func:`scipy.linalg.sqrtm`, an ``eps``-on-the-diagonal retry on a
        non-finite result, and an error when the imaginary part is not negligible. Both agree
        to round-off on well-conditioned input.
    eps : float
        Diagonal offset for the ``"sqrtm"`` retry.

    Returns
    -------
    float
        ``d^2 >= 0`` (tiny negative round-off is clipped to 0).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
            f"{sigma2.shape}; both sets must come from the same feature extractor"
        )
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps=eps)
    else:
        raise ValueError(f"unknown method {method!r}; use 'eigh' or 'sqrtm'")
    diff = mu1 - mu2
    d2 = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(d2, 0.0)


def fid_from_features(real_feats, fake_feats, *, method: str = "eigh") -> float:
    """FID between two feature sets ``(N, D)`` and ``(M, D)`` (see :func:`frechet_distance`)."""
    mu1, s1 = feature_statistics(real_feats)
    mu2, s2 = feature_statistics(fake_feats)
    return frechet_distance(mu1, s1, mu2, s2, method=method)


# ------------------------------------------------------------------------------------- KID


def _polynomial_kernel(a, b, *, degree: int, gamma: float, coef: float) -> np.ndarray:
    return (gamma * (a @ b.T) + coef) ** degree


def _mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD^2: within-set sums exclude the diagonal (i == j) terms."""
    m, n = len(kxx), len(kyy)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(
    feats_a,
    feats_b,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    rng=None,
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased polynomial-kernel MMD^2 (Bińkowski et al. 2018).

    With ``k(x, y) = (gamma x.y + coef)^degree`` and samples ``X`` (size m), ``Y`` (size n),

    ``MMD^2_u = sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(n(n-1))
    - 2 sum_{i,j} k(x_i,y_j)/(mn)``,

    whose expectation is the population MMD^2 (zero when both sets come from one
    distribution), so unlike the FID it has no bias at small sample sizes. It is averaged over
    ``subsets`` random subsets drawn without replacement.

    Parameters
    ----------
    feats_a, feats_b : array_like, (N, D) and (M, D), float
        Feature vectors of the two sets (same extractor).
    subsets : int
        Number of random subsets.
    subset_size : int
        Samples per subset and set; capped at ``min(N, M)``; at least 2.
    degree, gamma, coef : int, float or None, float
        Kernel parameters; ``gamma=None`` means ``1 / D`` (the paper's choice, with degree 3
        and coef 1).
    rng : numpy.random.Generator, int or None
        Randomness of the subsets; None means seed 0 (reproducible).

    Returns
    -------
    mean, std : float
        Mean and standard deviation (ddof=1; 0 for one subset) of MMD^2 over the subsets, in
        kernel units (unitless for the default kernel). ``mean`` may be slightly negative.
    """
    a = _as_features(feats_a, "feats_a")
    b = _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)
    gen = _rng(rng)
    kern = dict(degree=degree, gamma=gamma, coef=coef)
    values = np.empty(subsets)
    for s in range(subsets):
        x = a[gen.choice(len(a), m, replace=False)]
        y = b[gen.choice(len(b), m, replace=False)]
        values[s] = _mmd2_unbiased(
            _polynomial_kernel(x, x, **kern),
            _polynomial_kernel(y, y, **kern),
            _polynomial_kernel(x, y, **kern),
        )
    std = float(values.std(ddof=1)) if subsets > 1 else 0.0
    return float(values.mean()), std


# ------------------------------------------------------------------------------------ PRDC


def _kth_neighbour_radii(x: np.ndarray, k: int, *, chunk: int) -> np.ndarray:
    """Distance of each row of ``x`` to its k-th nearest *other* row (self excluded)."""
    radii = np.empty(len(x))
    for i in range(0, len(x), chunk):
        d2 = _pairwise_sq_dists(x[i : i + chunk], x)
        radii[i : i + chunk] = np.sqrt(np.partition(d2, k, axis=1)[:, k])  # index 0 is self
    return radii


def precision_recall_density_coverage(real, fake, *, k: int = 5, chunk: int = 1024) -> dict:
    """Precision, recall, density and coverage of a generated feature set.

    Each sample gets a ball reaching its k-th nearest neighbour within its own set.

    * precision: fraction of fake samples inside at least one real ball
      (Kynkäänniemi et al. 2019),
    * recall: fraction of real samples inside at least one fake ball (ibid.),
    * density: mean number of real balls containing a fake sample, divided by k
      (Naeem et al. 2020; about 1 for identical distributions, may exceed 1),
    * coverage: fraction of real samples whose ball contains at least one fake sample
      (Naeem et al. 2020).

    Parameters
    ----------
    real, fake : array_like, (N, D) and (M, D), float
        Feature vectors; N, M > k.
    k : int
        Neighbourhood size (5 in both papers).
    chunk : int
        Rows per block of the distance matrix (memory ~ ``chunk * max(N, M) * 8`` bytes).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``density``, ``coverage`` (floats; all in [0, 1] except
        density in [0, N/k]).
    """
    r = _as_features(real, "real")
    f = _as_features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: {r.shape[1]} vs {f.shape[1]}")
    if len(r) <= k or len(f) <= k:
        raise ValueError(f"need more than k={k} samples per set, got {len(r)} and {len(f)}")
    r_rad = _kth_neighbour_radii(r, k, chunk=chunk)
    f_rad = _kth_neighbour_radii(f, k, chunk=chunk)

    in_real_balls = 0
    density_count = 0
    for i in range(0, len(f), chunk):
        inside = np.sqrt(_pairwise_sq_dists(f[i : i + chunk], r)) <= r_rad[None, :]  # (c, N)
        in_real_balls += int(inside.any(axis=1).sum())
        density_count += int(inside.sum())

    recalled = 0
    covered = 0
    for i in range(0, len(r), chunk):
        d = np.sqrt(_pairwise_sq_dists(r[i : i + chunk], f))  # (c, M)
        recalled += int((d <= f_rad[None, :]).any(axis=1).sum())
        covered += int((d.min(axis=1) <= r_rad[i : i + chunk]).sum())

    return {
        "precision": in_real_balls / len(f),
        "recall": recalled / len(r),
        "density": density_count / (k * len(f)),
        "coverage": covered / len(r),
    }


# ----------------------------------------------------------------------------------- MiFID


def _mean_min_cosine_distance(real: np.ndarray, fake: np.ndarray, *, chunk: int) -> float:
    """Mean over fake samples of ``min_j (1 - |cos(fake_i, real_j)|)``."""
    def unit(x):
        x = x[np.any(x != 0, axis=1)]  # an all-zero vector has no direction
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    r, f = unit(real), unit(fake)
    if len(r) == 0 or len(f) == 0:
        raise ValueError("all feature vectors are zero; cosine distances are undefined")
    mins = np.empty(len(f))
    for i in range(0, len(f), chunk):
        mins[i : i + chunk] = (1.0 - np.abs(f[i : i + chunk] @ r.T)).min(axis=1)
    return float(mins.mean())


def mifid(
    fid: float,
    real_feats,
    fake_feats,
    *,
    eps: float = 1e-15,
    tau: float = 0.1,
    chunk: int = 1024,
) -> float:
    """Memorisation-informed FID (Bai et al. 2021; the Kaggle "Generative Dog Images" score).

    With ``d = mean_i min_j (1 - |cos(f_i, r_j)|)`` the mean, over generated features ``f_i``,
    of the cosine distance to the closest real (training) feature ``r_j`` (absolute cosine, as
    in the competition's scoring), the thresholded memorisation distance is
    ``d_thr = d if d < tau else 1`` and

    ``MiFID = FID / (d_thr + eps)``.

    So MiFID equals the FID unless generated samples sit, on average, closer than ``tau`` to
    training samples in feature space, in which case the FID is inflated by ``1 / d``.

    Parameters
    ----------
    fid : float
        The FID of ``fake_feats`` against the real set, same extractor.
    real_feats, fake_feats : array_like, (N, D) and (M, D), float
        Training-set and generated features. All-zero rows are skipped.
    eps : float
        Guard against division by zero.
    tau : float
        Memorisation threshold on the mean minimum cosine distance; 0.1 as in the competition.
    chunk : int
        Generated rows per block of the similarity matrix.

    Returns
    -------
    float
        MiFID, in the units of ``fid``.
    """
    r = _as_features(real_feats, "real_feats")
    f = _as_features(fake_feats, "fake_feats")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: {r.shape[1]} vs {f.shape[1]}")
    d = _mean_min_cosine_distance(r, f, chunk=chunk)
    d_thr = d if d < tau else 1.0
    return float(fid) / (d_thr + eps)


def mifid_from_features(real_feats, fake_feats, *, tau: float = 0.1) -> float:
    """MiFID computed from the two feature sets alone (FID by :func:`fid_from_features`)."""
    return mifid(fid_from_features(real_feats, fake_feats), real_feats, fake_feats, tau=tau)


# ------------------------------------------------------------------------ registry / names

METRICS: dict[str, Callable] = {
    "fid": fid_from_features,
    "kid": kid,
    "prdc": precision_recall_density_coverage,
    "mifid": mifid_from_features,
}
"""Feature-space metrics by short name; each is called as ``METRICS[name](real, fake)``
with ``(N, D)`` feature arrays of the same extractor. ``fid``/``mifid`` return a float,
``kid`` a ``(mean, std)`` pair, ``prdc`` a dict."""


METRIC_KINDS: dict[str, str] = {
    "fid": "Fréchet distance of Gaussians fitted to the features (squared feature units)",
    "kid": "kernel distance, unbiased polynomial-kernel MMD² (kernel units)",
    "mifid": "memorisation-informed FID (squared feature units)",
    "precision": "fraction of generated samples inside the real feature manifold",
    "recall": "fraction of real samples inside the generated feature manifold",
    "density": "mean count of real neighbourhoods holding a generated sample, / k",
    "coverage": "fraction of real neighbourhoods holding a generated sample",
    "prdc": "precision, recall, density and coverage together",
}
"""Every kind of feature-space number that gets a :func:`metric_name`, with what it measures."""

_NAME = re.compile(r"^(?P<metric>[a-z]+)_(?P<extractor>[a-z0-9]+)_(?P<n>\d+k?)(?:v(?P<n_real>\d+k?))?"
                   r"(?:_(?P<suffix>std))?$")


@dataclass(frozen=True)
class MetricName:
    """The parts of a metric name (see :func:`metric_name`).

    Attributes
    ----------
    metric : str
        A key of :data:`METRIC_KINDS`.
    extractor : str
        Feature extractor (``galaxy``, ``inception``, ``pix8``).
    n : int
        Generated samples.
    n_real : int or None
        Real samples compared with (None in names written before the protocol was recorded).
    suffix : str
        ``""``, or ``"std"`` for the spread of a value over subsets (KID).
    """

    metric: str
    extractor: str
    n: int
    n_real: int | None = None
    suffix: str = ""

    def __str__(self) -> str:
        real = "" if self.n_real is None else f"v{_count_label(self.n_real)}"
        return f"{self.metric}_{self.extractor}_{_count_label(self.n)}{real}" + (f"_{self.suffix}" if self.suffix else "")

    @property
    def description(self) -> str:
        """What the number is, with its protocol, e.g. for the card's tables and axis titles."""
        real = ("real samples of unknown size" if self.n_real is None
                else f"{self.n_real:,} real images")
        what = METRIC_KINDS.get(self.metric, self.metric)
        return (f"{'spread of ' if self.suffix == 'std' else ''}{what}; {self.extractor} features; "
                f"{self.n:,} generated samples against {real}")


def _count_label(n: int) -> str:
    """``5000 -> "5k"``, ``50000 -> "50k"``, ``500 -> "500"``, ``2500 -> "2500"``."""
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def _count_value(label: str) -> int:
    return int(label[:-1]) * 1000 if label.endswith("k") else int(label)


def metric_name(metric: str, *, extractor: str, n: int, n_real: int | None = None, suffix: str = "") -> str:
    """Name under which a metric value is recorded: metric, extractor and the protocol.

    ``<metric>_<extractor>_<n>v<n_real>``: ``n`` generated samples compared with ``n_real``
    real ones, counts of whole thousands written ``5k``. Examples::

        metric_name("fid", extractor="galaxy", n=256, n_real=5000) == "fid_galaxy_256v5k"  # live
        metric_name("kid", extractor="galaxy", n=500, n_real=500) == "kid_galaxy_500v500"  # n vs n

    Parameters
    ----------
    metric : str
        A key of :data:`METRIC_KINDS`.
    extractor : str
        Short name of the feature extractor (letters and digits only).
    n : int
        Number of generated samples the value was computed from (> 0).
    n_real : int, optional
        Number of real samples (> 0); leave out only for names of other protocols.
    suffix : {"", "std"}
        ``"std"`` names the spread of the value over subsets.

    Raises
    ------
    ValueError
        Unknown metric, an extractor name with other characters, or a count below 1.
    """
    if metric not in METRIC_KINDS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRIC_KINDS)}")
    if not extractor or not extractor.isalnum():
        raise ValueError(f"extractor name must be letters/digits only, got {extractor!r}")
    if int(n) <= 0 or (n_real is not None and int(n_real) <= 0):
        raise ValueError(f"sample counts must be positive, got n={n}, n_real={n_real}")
    if suffix not in ("", "std"):
        raise ValueError(f"suffix must be '' or 'std', got {suffix!r}")
    return str(MetricName(metric, extractor.lower(), int(n), None if n_real is None else int(n_real), suffix))


def parse_metric_name(name: str) -> MetricName | None:
    """The parts of a name made by :func:`metric_name`; None for any other name.

    Names of the older form without the real count (``fid_pix8_256``) parse with
    ``n_real=None``.
    """
    m = _NAME.match(name)
    if m is None or m["metric"] not in METRIC_KINDS:
        return None
    return MetricName(m["metric"], m["extractor"], _count_value(m["n"]),
                      None if m["n_real"] is None else _count_value(m["n_real"]), m["suffix"] or "")
