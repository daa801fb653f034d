"""Feature-space metrics: FID against closed forms, KID unbiasedness, PRDC, MiFID, names."""

from __future__ import annotations

import numpy as np
import pytest

from galaxy_core.metrics.fid import (
    METRICS,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid,
    metric_name,
    parse_metric_name,
    mifid,
    precision_recall_density_coverage,
)


def _closed_form_diagonal(mu1, s1, mu2, s2):
    """FD of two Gaussians with diagonal covariances (variances s1, s2)."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2)))


# --------------------------------------------------------------------------------- FID


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_diagonal_closed_form(method):
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 0.25])
    expected = 5.0 + (1 + 4 - 4) + (4 + 1 - 4) + 0.0  # = 7 by hand
    assert _closed_form_diagonal(mu1, s1, mu2, s2) == pytest.approx(expected)
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), method=method)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_full_covariance_methods_agree():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    d_eigh = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    d_sqrtm = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    assert d_eigh == pytest.approx(d_sqrtm, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_singular_covariances_is_finite():
    # N < D: rank-deficient covariances, the usual case for small galaxy sets
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(10, 32)), rng.normal(size=(10, 32))
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    d = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(d) and d > 0


def test_sample_fid_converges_to_closed_form():
    rng = np.random.default_rng(3)
    mu1, mu2 = np.zeros(4), np.full(4, 0.5)
    s1, s2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 1.0, 1.0, 0.5])
    truth = _closed_form_diagonal(mu1, s1, mu2, s2)
    errors = []
    for n in (200, 2000, 40000):
        f1 = mu1 + np.sqrt(s1) * rng.normal(size=(n, 4))
        f2 = mu2 + np.sqrt(s2) * rng.normal(size=(n, 4))
        errors.append(abs(fid_from_features(f1, f2) - truth))
    assert errors[-1] < 0.02 * truth
    assert errors[-1] < errors[0]


def test_fid_of_identical_sets_is_zero():
    f = np.random.default_rng(4).normal(size=(500, 16))
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_features(f, f, method="sqrtm") == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same feature extractor"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --------------------------------------------------------------------------------- KID


def test_kid_is_unbiased_for_one_distribution():
    rng = np.random.default_rng(5)
    values = [
        kid(rng.normal(size=(40, 8)), rng.normal(size=(40, 8)), subsets=1, rng=rng)[0]
        for _ in range(300)
    ]
    mean, sem = np.mean(values), np.std(values, ddof=1) / np.sqrt(len(values))
    assert abs(mean) < 2 * sem


def test_kid_is_positive_for_shifted_distributions():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(400, 8)), rng.normal(0.5, 1.0, size=(400, 8))
    mean, std = kid(a, b, subsets=20, subset_size=200, rng=1)
    assert mean > 5 * std > 0
    same, _ = kid(a, rng.normal(size=(400, 8)), subsets=20, subset_size=200, rng=1)
    assert same < mean / 10


def test_kid_is_reproducible_with_seed():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(100, 4)), rng.normal(size=(100, 4))
    opts = dict(subsets=5, subset_size=50, rng=3)
    assert kid(a, b, **opts) == kid(a, b, **opts)


# -------------------------------------------------------------------------------- PRDC


def test_prdc_hand_computed_1d():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k=1 radii: all 1
    fake = np.array([[0.5], [10.0], [11.0], [13.0]])  # k=1 radii: 9.5, 1, 1, 2
    got = precision_recall_density_coverage(real, fake, k=1)
    assert got == pytest.approx(
        {"precision": 0.25, "recall": 1.0, "density": 0.5, "coverage": 0.5}
    )


def test_prdc_same_shifted_and_collapsed():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(600, 4))
    same = precision_recall_density_coverage(real, rng.normal(size=(600, 4)), chunk=256)
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    assert same["coverage"] > 0.8 and 0.8 < same["density"] < 1.2

    shifted = precision_recall_density_coverage(real, rng.normal(6.0, 1.0, size=(600, 4)))
    assert shifted["precision"] < 0.05 and shifted["coverage"] < 0.05

    collapsed = precision_recall_density_coverage(real, rng.normal(0.0, 0.05, size=(600, 4)))
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.2
    assert collapsed["coverage"] < 0.2


# ------------------------------------------------------------------------------- MiFID


def test_mifid_thresholding():
    real = np.array([[1.0, 0.0], [0.0, 1.0]])
    near = np.array([[1.0, 0.1]])  # cosine distance 1 - 1/sqrt(1.01) ~ 0.004975 < 0.1
    d = 1.0 - 1.0 / np.sqrt(1.01)
    assert mifid(2.0, real, near) == pytest.approx(2.0 / d, rel=1e-9)
    far = np.array([[1.0, 1.0]])  # cosine distance 1 - 1/sqrt(2) ~ 0.29 >= 0.1 -> d_thr = 1
    assert mifid(2.0, real, far) == pytest.approx(2.0)
    assert mifid(2.0, real, far, tau=0.5) == pytest.approx(2.0 / (1 - 1 / np.sqrt(2)))


# ------------------------------------------------------------------------------- names


def test_metric_names_say_extractor_protocol_and_parse_back():
    assert metric_name("fid", extractor="galaxy", n=256, n_real=5000) == "fid_galaxy_256v5k"
    assert metric_name("kid", extractor="pix8", n=500, n_real=500, suffix="std") == "kid_pix8_500v500_std"
    assert metric_name("recall", extractor="galaxy", n=96, n_real=191) == "recall_galaxy_96v191"
    for name, parts in [("fid_galaxy_256v5k", ("fid", "galaxy", 256, 5000, "")),
                        ("kid_pix8_500v500_std", ("kid", "pix8", 500, 500, "std")),
                        ("fid_inception_50kv50k", ("fid", "inception", 50000, 50000, "")),
                        ("fid_pix8_256", ("fid", "pix8", 256, None, ""))]:  # older names: real count unknown
        p = parse_metric_name(name)
        assert (p.metric, p.extractor, p.n, p.n_real, p.suffix) == parts and str(p) == name
    assert "256 generated samples against 5,000 real images" in parse_metric_name("fid_galaxy_256v5k").description
    for other in ("sgd_morphology", "cmd_fraction_in_box", "fid_galaxy", "bogus_galaxy_5", "fid_galaxy_5x"):
        assert parse_metric_name(other) is None
    with pytest.raises(ValueError, match="positive"):
        metric_name("fid", extractor="galaxy", n=10, n_real=0)


def test_metric_names_and_registry():
    assert metric_name("fid", extractor="galaxy", n=5000) == "fid_galaxy_5k"
    assert metric_name("kid", extractor="galaxy", n=500) == "kid_galaxy_500"
    assert metric_name("fid", extractor="inception", n=50000) == "fid_inception_50k"
    assert metric_name("prdc", extractor="galaxy", n=2500) == "prdc_galaxy_2500"
    with pytest.raises(ValueError, match="unknown metric"):
        metric_name("is", extractor="galaxy", n=10)
    with pytest.raises(ValueError, match="letters/digits"):
        metric_name("fid", extractor="gal_axy", n=10)
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(50, 64)), rng.normal(size=(50, 64))  # nearly orthogonal
    assert isinstance(METRICS["fid"](a, b), float)
    assert len(METRICS["kid"](a, b)) == 2
    assert set(METRICS["prdc"](a, b)) == {"precision", "recall", "density", "coverage"}
    assert METRICS["mifid"](a, b) == pytest.approx(METRICS["fid"](a, b))
