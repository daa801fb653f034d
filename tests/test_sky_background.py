"""Background model measured from source-free sky: level, cross-band covariance, spatial
correlation and pixel histogram are those of the data."""

import numpy as np

from galaxy_core.sky.background import Background, masked_autocorrelation, measure_background


def _correlated_field(rng, shape=(384, 384)):
    """Known noise: one shared and one per-band Gaussian-smoothed field per band (bands
    correlated by construction), sigma 0.02, level 0.05, with bright square sources."""
    from scipy import ndimage

    def smooth(a):
        return ndimage.gaussian_filter(a, 1.2, mode="wrap")

    shared = smooth(rng.standard_normal(shape))
    bands = [0.8 * shared + 0.6 * smooth(rng.standard_normal(shape)) for _ in range(3)]
    x = np.stack(bands, -1)
    x = 0.05 + 0.02 * x / x.std()
    mask = np.zeros(shape, bool)
    for y0, x0 in rng.integers(10, 360, (20, 2)):
        x[y0 : y0 + 12, x0 : x0 + 12] += 0.5
        mask[y0 - 2 : y0 + 14, x0 - 2 : x0 + 14] = True
    return x, mask


def _lag1(a):
    a = a - a.mean()
    return float((a[:, 1:] * a[:, :-1]).mean() / a.var())


def test_masked_autocorrelation_ignores_masked_pixels():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((64, 64))
    w = np.ones_like(v)
    w[20:40, 20:40] = 0
    xi = masked_autocorrelation(v * w + 100 * (1 - w), w, 2)  # huge values under the mask must not count
    assert xi.shape == (5, 5)
    assert abs(xi[2, 2] - v[w > 0].var()) < 0.05
    assert abs(xi[2, 3]) < 0.05 and abs(xi[3, 2]) < 0.05  # white noise: no correlation at lag 1


def test_measured_background_reproduces_level_covariance_correlation_and_histogram():
    rng = np.random.default_rng(1)
    field, mask = _correlated_field(rng)
    bg = measure_background(field, mask, kernel=15)
    drawn = bg.draw((384, 384), np.random.default_rng(2))  # (3, H, W)
    free = field[~mask]
    assert np.allclose(drawn.reshape(3, -1).mean(1), free.mean(0), atol=0.002)
    assert np.allclose(drawn.reshape(3, -1).std(1), free.std(0), rtol=0.06)
    # cross-band correlation (about 0.64 by construction), lost by independent white noise
    c_true = np.corrcoef(free.T)[0, 1]
    assert abs(np.corrcoef(drawn.reshape(3, -1))[0, 1] - c_true) < 0.06
    # spatial correlation at lag 1 (about 0.84 for the 1.2 px smoothing), 0 for white noise
    r_true = _lag1(np.where(mask, field[..., 0].mean(), field[..., 0])[:, :150])
    assert abs(_lag1(drawn[0]) - r_true) < 0.08
    assert _lag1(drawn[0]) > 0.6
    # histogram: quantiles of each band match the free pixels'
    q = np.quantile(drawn.reshape(3, -1), [0.05, 0.5, 0.95], axis=1).T
    assert np.allclose(q, np.quantile(free, [0.05, 0.5, 0.95], axis=0).T, atol=0.004)


def test_white_background_is_independent_per_pixel():
    bg = Background(level=(0.05, 0.05, 0.05), sigma=(0.01, 0.02, 0.03))
    d = bg.draw((200, 200), np.random.default_rng(0))
    assert np.allclose(d.reshape(3, -1).std(1), [0.01, 0.02, 0.03], rtol=0.05)
    assert abs(_lag1(d[0])) < 0.03


def test_histogram_mapping_is_precompensated_so_the_drawn_noise_keeps_the_data_correlation():
    """A correlated field with a floor (a third of its pixels at the floor, like the 8-bit zero
    of the deep field): mapping Gaussian noise of the measured spectrum onto its histogram
    decorrelates it; the pre-compensation rounds of measure_background restore the data's
    lag-1 correlation and keep its histogram."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    shape = (320, 320)
    shared = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2, mode="wrap")
    bands = [0.8 * shared + 0.6 * ndimage.gaussian_filter(rng.standard_normal(shape), 1.2, mode="wrap")
             for _ in range(3)]
    g = np.stack([b / b.std() for b in bands], -1)
    field = 0.05 + 0.02 * np.clip(g, -0.5, 2.5)
    mask = np.zeros(shape, bool)
    r_true = _lag1(field[..., 0])
    plain = measure_background(field, mask, kernel=25, match_iterations=0)
    matched = measure_background(field, mask, kernel=25, match_size=512)
    r_plain = _lag1(plain.draw(shape, np.random.default_rng(4))[0])
    drawn = matched.draw(shape, np.random.default_rng(4))
    r_matched = _lag1(drawn[0])
    assert r_true - r_plain > 0.015  # the mapping alone decorrelates (0.791 against 0.813)
    assert abs(r_matched - r_true) < 0.008
    q = [0.1, 0.35, 0.5, 0.9]  # the floor holds a third of the pixels
    assert np.allclose(np.quantile(drawn[0], q), np.quantile(field[..., 0], q), atol=0.002)
    # deterministic: the rounds use fixed seeds
    again = measure_background(field, mask, kernel=25, match_size=512)
    assert np.array_equal(again.kernels, matched.kernels)
