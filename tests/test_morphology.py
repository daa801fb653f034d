"""Morphology on synthetic Sérsic galaxies drawn here, batches, and distribution comparisons."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from astropy.modeling.models import Sersic2D
from astropy.table import Table

from galaxy_core.metrics.morphology import (
    COLUMNS,
    ISOPHOTE_PROTOCOLS,
    IsophoteAttempt,
    compare_distributions,
    flag_summary,
    measure,
    measure_fast,
    measure_isophote,
    measure_many,
    measure_statmorph,
    real_vs_real_floor,
    synthetic_galaxy_distance,
)

R_EFF = 8.0  # px, along the major axis


def _galaxy(ellip=0.4, theta=30.0, *, size=64, r_eff=R_EFF, n=1.0, noise=0.01, seed=0):
    """(image, noiseless flux in the stamp): an elliptical Sérsic profile plus Gaussian noise."""
    y, x = np.mgrid[:size, :size]
    c = (size - 1) / 2
    model = Sersic2D(
        amplitude=1.0, r_eff=r_eff, n=n, x_0=c, y_0=c + 0.5, ellip=ellip, theta=np.deg2rad(theta)
    )
    clean = model(x, y)
    return clean + np.random.default_rng(seed).normal(0, noise, clean.shape), float(clean.sum())


def _angle_diff(a, b):
    """Difference of two axis angles in degrees, modulo 180."""
    return abs((a - b + 90) % 180 - 90)


# ------------------------------------------------------------------------------ fast path


@pytest.mark.parametrize("ellip, theta", [(0.4, 30.0), (0.6, -50.0), (0.2, 80.0)])
def test_fast_path_recovers_shape_and_flux(ellip, theta):
    img, flux = _galaxy(ellip, theta)
    row = measure_fast(img)
    assert not row["failed"] and row["reason"] == "" and row["notes"] == ""
    assert row["x_centroid"] == pytest.approx(31.5, abs=0.3)
    assert row["y_centroid"] == pytest.approx(32.0, abs=0.3)
    assert row["ellipticity"] == pytest.approx(ellip, abs=0.03)
    assert _angle_diff(row["orientation"], theta) < 3.0
    assert -90 <= row["orientation"] < 90
    assert row["kron_flux"] == pytest.approx(flux, rel=0.05)
    assert row["segment_flux"] == pytest.approx(flux, rel=0.05)
    assert 2.4 < row["concentration"] < 3.1  # exponential disc: C ~ 2.7 (Bershady et al. 2000)
    assert 0 < row["gini"] < 1 and row["n_sources"] == 1


def test_fast_path_sums_bands_and_subtracts_sky():
    img, flux = _galaxy()
    cube = np.stack([0.2 * img + 5.0, 0.3 * img + 5.0, 0.5 * img + 5.0])  # sky 5 per band
    row = measure_fast(cube)
    assert row["background"] == pytest.approx(15.0, abs=0.01)
    assert row["kron_flux"] == pytest.approx(flux, rel=0.05)


@pytest.mark.parametrize("method", ["fast", "isophote", "statmorph"])
def test_empty_and_bad_images_fail_with_a_reason(method):
    noise = np.random.default_rng(1).normal(0, 1, (64, 64))
    row = measure(noise, method=method)
    assert row["failed"] and "no source detected" in row["reason"]
    assert all(np.isnan(row[c]) for c in COLUMNS[method][:3])
    flat = measure(np.zeros((64, 64)), method=method)
    assert flat["reason"] == "image is constant (nothing to measure)"
    bad = np.ones((64, 64))
    bad[3, 3] = np.nan
    assert "NaN" in measure(bad, method=method)["reason"]


# -------------------------------------------------------------------------- isophote path


def _check_isophote(row, flux, ellip=0.4, theta=30.0):
    assert not row["failed"], row["reason"]
    assert row["iso_ellipticity"] == pytest.approx(ellip, abs=0.03)
    assert _angle_diff(row["iso_pa"], theta) < 3.0
    assert row["iso_flux"] == pytest.approx(flux, rel=0.05)
    assert row["iso_sma_half"] == pytest.approx(R_EFF, rel=0.1)  # r_eff: half-light semi-major
    assert row["iso_x0"] == pytest.approx(31.5, abs=0.3)
    assert row["iso_y0"] == pytest.approx(32.0, abs=0.3)
    assert row["iso_n_isophotes"] >= 3 and row["iso_attempt"] == 0


def test_isophote_path_native():
    img, flux = _galaxy()
    _check_isophote(measure_isophote(img), flux)


@pytest.mark.slow
def test_isophote_path_upscaled_to_512():
    img, flux = _galaxy(ellip=0.5, theta=-20.0, seed=3)
    paper = replace(ISOPHOTE_PROTOCOLS["paper512"], maxit=20)
    _check_isophote(measure_isophote(img, protocol=paper), flux, ellip=0.5, theta=-20.0)


def test_isophote_neighbour_is_filled_not_fitted():
    # A bright star 14 px from the galaxy centre, split from it by deblending: the measurement
    # with the star matches the one without, because its pixels are replaced by their mirror
    # image through the galaxy centre.
    img, flux = _galaxy()
    y, x = np.mgrid[:64, :64]
    star = 20.0 * np.exp(-((x - 45.5) ** 2 + (y - 32.0) ** 2) / 2.0)
    clean = measure_isophote(img, deblend=True)
    starred = measure_isophote(img + star, deblend=True)
    assert not starred["failed"], starred["reason"]
    for col, tol in [("iso_ellipticity", 0.02), ("iso_pa", 2.0), ("iso_x0", 0.2)]:
        assert starred[col] == pytest.approx(clean[col], abs=tol)
    assert starred["iso_sma_half"] == pytest.approx(clean["iso_sma_half"], rel=0.05)
    # the star's flux, 20 * 2 pi = 126 (27 % of the galaxy's), is not in the galaxy's
    assert starred["iso_flux"] == pytest.approx(clean["iso_flux"], rel=0.03)
    assert clean["iso_flux"] == pytest.approx(flux, rel=0.06)


def test_isophote_protocol_is_checked():
    with pytest.raises(ValueError, match="unknown isophote protocol 'fast'"):
        measure_isophote(np.zeros((8, 8)), protocol="fast")
    assert ISOPHOTE_PROTOCOLS["paper512"].size == 512 and ISOPHOTE_PROTOCOLS["native"].size is None


def test_isophote_failures_are_recorded_per_attempt():
    img, _ = _galaxy(size=32, r_eff=4.0)
    attempts = (IsophoteAttempt(), IsophoteAttempt(fix_center=True))
    row = measure_isophote(img, attempts=attempts, min_isophotes=1000)
    assert row["failed"] and np.isnan(row["iso_ellipticity"])
    assert row["reason"].startswith("isophote fit failed: #0: only ")
    assert "; #1: only " in row["reason"]


# ------------------------------------------------------------------------- statmorph path


def test_statmorph_path_recovers_sersic_fit():
    img, _ = _galaxy(ellip=0.4, theta=30.0)
    row = measure_statmorph(img)
    assert not row["failed"], row["reason"]
    assert row["sm_flag"] == 0 and row["sm_flag_sersic"] == 0
    assert row["sm_sersic_n"] == pytest.approx(1.0, abs=0.1)
    assert row["sm_sersic_rhalf"] == pytest.approx(R_EFF, rel=0.05)
    assert row["sm_ellipticity"] == pytest.approx(0.4, abs=0.03)
    assert _angle_diff(row["sm_orientation"], 30.0) < 3.0
    assert 2.4 < row["sm_concentration"] < 3.1 and row["sm_sn_per_pixel"] > 2.5


def test_flag_summary_counts():
    t = Table(
        {
            "sm_flag": [0.0, 0.0, 1.0, 2.0, np.nan],
            "sm_flag_sersic": [0.0, 1.0, 0.0, 0.0, np.nan],
            "sm_sn_per_pixel": [10.0, 1.0, 5.0, 3.0, np.nan],
            "failed": [False, False, False, True, True],
        }
    )
    assert flag_summary(t) == {
        "n": 5, "failed": 2, "no_source": 1, "flag_0": 2, "flag_1": 1, "flag_2": 1,
        "flag_4": 0, "flag_sersic": 1, "low_sn": 1,
    }  # fmt: skip


# ------------------------------------------------------------------------------- batches


def test_measure_many_in_worker_processes_matches_serial():
    shapes = [(0.3, 10), (0.5, 60), (0.1, -40)]
    galaxies = [_galaxy(e, t, seed=s)[0] for s, (e, t) in enumerate(shapes)]
    noise = np.random.default_rng(9).normal(0, 1, (64, 64))
    images = np.stack(galaxies + [noise, np.zeros((64, 64))])
    seen = []
    parallel = measure_many(
        images, workers=2, chunk_size=2, progress=lambda done, total: seen.append((done, total))
    )
    serial = measure_many(images, workers=1, progress=False)
    assert parallel.colnames == ["index", *COLUMNS["fast"]]
    assert parallel["index"].tolist() == list(range(5))
    assert parallel["failed"].tolist() == [False, False, False, True, True]
    assert "no source" in parallel["reason"][3] and "constant" in parallel["reason"][4]
    assert seen[-1] == (5, 5)
    for col in ("ellipticity", "orientation", "kron_flux"):
        np.testing.assert_array_equal(parallel[col], serial[col])
    assert parallel["ellipticity"][1] == pytest.approx(0.5, abs=0.03)


def test_measure_many_checks_options_before_work():
    with pytest.raises(TypeError, match="n_sigmas"):
        measure_many(np.zeros((2, 8, 8)), method="fast", n_sigmas=3, progress=False)
    with pytest.raises(ValueError, match="unknown morphology method"):
        measure_many(np.zeros((2, 8, 8)), method="sersic", progress=False)
    empty = measure_many(np.zeros((0, 8, 8)), progress=False)
    assert len(empty) == 0 and empty.colnames[0] == "index"


# --------------------------------------------------------------------------- comparisons


def test_compare_distributions_and_real_floor():
    rng = np.random.default_rng(5)
    real = rng.normal(0, 1, 4000)
    shifted = compare_distributions(real, np.append(rng.normal(1, 1, 4000), np.nan))
    assert shifted["wasserstein"] == pytest.approx(1.0, abs=0.08)
    assert shifted["ks_p"] < 1e-10 and shifted["n_fake"] == 4000
    same = compare_distributions(real, rng.normal(0, 1, 4000))
    floor = real_vs_real_floor(real, rng=1, repeats=10)
    assert floor["n_half"] == 2000
    assert floor["wasserstein"] < 0.1 and same["wasserstein"] < 3 * floor["wasserstein"] + 0.05
    assert shifted["wasserstein"] > 10 * floor["wasserstein"]


def test_synthetic_galaxy_distance_by_hand():
    real = {"mag_r": np.array([0.0, 1.0, 2.0, 3.0]), "r_half": np.array([10.0, 20.0, 30.0, 40.0])}
    fake = {"mag_r": real["mag_r"] + 1.0, "r_half": real["r_half"].copy()}
    raw = synthetic_galaxy_distance(real, fake, ["mag_r", "r_half"], standardise=False)
    assert raw["sgd"] == pytest.approx(1.0)
    assert raw["per_column"] == {"mag_r": pytest.approx(1.0), "r_half": 0.0}
    std = synthetic_galaxy_distance(real, fake, ["mag_r", "r_half"])
    assert std["sgd"] == pytest.approx(1.0 / np.std([0, 1, 2, 3], ddof=1))


def test_synthetic_galaxy_distance_constant_real_column_left_in_its_units():
    """A real column with one value (0.7 repeated: its float std is ~1e-16, not 0) is compared
    unscaled and named, instead of raising or blowing the term up by 1e16."""
    real = {"mag_r": np.array([0.0, 1.0, 2.0, 3.0]), "seeing": np.full(4, 0.7)}
    fake = {"mag_r": real["mag_r"] + 1.0, "seeing": np.array([0.7, 0.7, 0.9, 1.1])}
    out = synthetic_galaxy_distance(real, fake, ["mag_r", "seeing"])
    # W1 to a point mass is the mean absolute offset: (0 + 0 + 0.2 + 0.4) / 4
    assert out["per_column"]["seeing"] == pytest.approx(0.15)
    assert out["per_column"]["mag_r"] == pytest.approx(1.0 / np.std([0, 1, 2, 3], ddof=1))
    assert out["sgd"] == pytest.approx(0.15 + 1.0 / np.std([0, 1, 2, 3], ddof=1))
    assert out["unstandardised"] == ["seeing"]
    same = synthetic_galaxy_distance(real, {"mag_r": real["mag_r"], "seeing": np.full(3, 0.7)}, ["seeing"])
    assert same["sgd"] == 0.0 and same["unstandardised"] == ["seeing"]
    assert synthetic_galaxy_distance(real, fake, ["seeing"], standardise=False)["unstandardised"] == []
