"""Batched SSIM: the same values as one scikit-image call per pair, on real and synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from galaxy_core.data import load_dataset
from galaxy_core.metrics.ssim import local_statistics, ssim_matrix
from galaxy_core.metrics.vetting import nearest_matches


def _per_pair(queries: np.ndarray, refs: np.ndarray, *, data_range: float = 2.0) -> np.ndarray:
    """The per-pair loop the batched version replaces."""
    return np.array([[structural_similarity(q, r, data_range=data_range, channel_axis=0) for r in refs]
                     for q in queries])


@pytest.fixture(scope="module")
def hdf_images() -> np.ndarray:
    ds = load_dataset("hdf", resolution=32, progress=False)
    return ds.to_model_range(np.arange(40))  # (40, 3, 32, 32) real stamps in [-1, 1]


def test_matches_the_per_pair_loop_on_real_stamps(hdf_images):
    q, r = hdf_images[:5], hdf_images[5:40]
    fast = ssim_matrix(q, r, chunk=16, query_chunk=2)  # several blocks of both kinds
    np.testing.assert_allclose(fast, _per_pair(q, r), atol=1e-4, rtol=0)
    assert fast.shape == (5, 35) and fast.dtype == np.float64


@pytest.mark.parametrize(("shape", "data_range"), [((1, 12, 20), 1.0), ((3, 9, 9), 2.0), ((2, 16, 16), 255.0)])
def test_matches_the_per_pair_loop_on_other_shapes_and_ranges(shape, data_range):
    rng = np.random.default_rng(3)
    base = rng.uniform(0, data_range, (4, *shape)).astype(np.float32)
    refs = np.concatenate([base, base + rng.normal(0, 0.05 * data_range, base.shape).astype(np.float32)])
    np.testing.assert_allclose(ssim_matrix(base, refs, data_range=data_range),
                               _per_pair(base, refs, data_range=data_range), atol=1e-4, rtol=0)


def test_identical_images_score_one_and_grey_images_by_hand():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 2, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(np.diag(ssim_matrix(x, x)), 1.0, atol=1e-6)
    # two flat images a and b: variances and covariance vanish, so SSIM is the luminance term
    a, b = np.full((1, 1, 8, 8), 0.2, np.float32), np.full((1, 1, 8, 8), -0.3, np.float32)
    c1 = (0.01 * 2) ** 2
    assert ssim_matrix(a, b)[0, 0] == pytest.approx((2 * 0.2 * -0.3 + c1) / (0.2**2 + 0.3**2 + c1), abs=1e-4)


def test_statistics_are_per_image_and_shaped():
    x = np.random.default_rng(1).normal(size=(5, 3, 16, 12)).astype(np.float32)
    st = local_statistics(x)
    assert st.mean.shape == (5, 3 * 10 * 6) and st.patches.shape == (3 * 10 * 6, 49, 5)
    # window (channel 1, top-left corner) mean and sample variance by hand
    win = x[2, 1, :7, :7]
    assert float(st.mean[2, 60]) == pytest.approx(win.mean(), abs=1e-6)
    assert float(st.var[2, 60]) == pytest.approx(win.var(ddof=1), abs=1e-5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 7 px"):
        ssim_matrix(np.zeros((1, 1, 6, 6)), np.zeros((1, 1, 6, 6)))
    with pytest.raises(ValueError, match="shapes must match"):
        ssim_matrix(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 9, 9)))


def test_nearest_match_search_is_exact(hdf_images):
    q, r = hdf_images[:4], hdf_images[4:40]
    idx, d = nearest_matches(q, r, metric="ssim", k=2, method="fast")  # ssim is always exact
    loop = 1.0 - _per_pair(q, r)
    np.testing.assert_array_equal(idx[:, 0], loop.argmin(axis=1))
    np.testing.assert_allclose(d[:, 0], loop.min(axis=1), atol=1e-4)
