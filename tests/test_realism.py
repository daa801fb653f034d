"""Power-spectrum realism: the spectrum of a sinusoid, and the scorer on held-out tiles."""

import numpy as np
import pytest

from galaxy_core.metrics.realism import (classifier_test, power_spectrum_1d, real_hdf_tiles, tile_features,
                                         train_scorer, tiles_of, luminance)
from galaxy_core.sky.baselines import baseline_uniform


@pytest.mark.parametrize("f", [5, 17])
def test_sinusoid_peaks_at_its_frequency(f):
    n = 64
    y, x = np.mgrid[:n, :n]
    k, p = power_spectrum_1d(np.sin(2 * np.pi * f * x / n) + 0.3 * np.cos(2 * np.pi * 3 * f // 5 * y / n))
    assert k[np.argmax(p)] == f
    assert len(k) == n // 2 and k[0] == 1


def test_white_noise_spectrum_is_flat():
    rng = np.random.default_rng(0)
    _, p = power_spectrum_1d(rng.standard_normal((128, 128)))
    assert np.mean(p[10:]) == pytest.approx(1.0, rel=0.1)  # unit variance, normalised by sum(w^2)


def test_scorer_separates_real_from_baseline1_on_held_out_tiles():
    real = np.stack([tile_features(t) for t in real_hdf_tiles(160, seed=0)])
    fake = np.concatenate([np.stack([tile_features(t) for t in tiles_of(luminance(
        baseline_uniform(height=512, width=512, seed=s).image))]) for s in range(10)])
    scorer = train_scorer(real[:120], fake[:120])
    p_real, p_fake = scorer.tile_scores(real[120:]), scorer.tile_scores(fake[120:])
    acc = (np.sum(p_real > 0.5) + np.sum(p_fake <= 0.5)) / (len(p_real) + len(p_fake))
    assert acc > 0.85
    assert classifier_test(real, fake, folds=3)["accuracy"] > 0.85


def test_feature_shifts_name_the_changed_feature():
    from galaxy_core.metrics.realism import feature_names, feature_shifts

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 96))
    b = rng.normal(size=(200, 96))
    b[:, 64 + 3] += 2.0  # histogram bin H3 shifted by two standard deviations
    top = feature_shifts(a, b, top=3)
    assert feature_names()[67] == "H3" and top[0]["feature"] == "H3"
    assert 1.5 < top[0]["d"] < 2.5 and top[0]["ks"] > 0.5


def test_grouped_test_of_the_field_against_itself_is_near_chance():
    from galaxy_core.metrics.realism import real_vs_real_grouped

    out = real_vs_real_grouped(400, seed=11)
    assert len(out["splits"]) == 3 and out["n"] == 400
    # the field's column bands are indistinguishable: a perfect generator could reach the goal of 0.65
    assert 0.35 < out["accuracy"] < 0.62


def test_luminance_saturates_each_band_like_the_8bit_field(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(3)
    sky = rng.uniform(-0.2, 1.6, (3, 16, 16)).astype(np.float32)
    sky[:, 0, 0] = (1.5, 0.5, 0.5)  # one band over the ceiling
    lum = luminance(sky)
    assert lum[0, 0] == pytest.approx((1.0 + 128 / 255 + 128 / 255) / 3)  # not the clipped band mean, 0.833
    sky[:, 1, :8] = (np.arange(8) + 0.5)[None] / 255.0  # exact half levels, where roundings differ
    lum = luminance(sky)
    # the scorer sees a composed sky exactly as the composer's 8-bit PNG records it
    from galaxy_core.sky.compose import Sky, _truth_table
    from galaxy_core.sky.mosaic import write_sky

    (png,) = write_sky(Sky(image=sky, truth=_truth_table([]), background_sum=0.0), tmp_path / "sky", fits=False,
                       csv=False)
    back = np.moveaxis(np.asarray(Image.open(png), np.float64) / 255.0, -1, 0)
    np.testing.assert_array_equal(luminance(back), lum)
    assert np.all((lum >= 0) & (lum <= 1))


def test_one_field_null_is_near_chance_for_one_process_and_high_for_two():
    """A perfect generator scored against one image of its own process sits near 0.5 under the
    grouped test; the same protocol separates two different processes."""
    from galaxy_core.metrics.realism import one_field_null
    from galaxy_core.sky.baselines import baseline_geometric, baseline_uniform

    def uniform(h, w, s):
        return baseline_uniform(height=h, width=w, seed=s).image

    def geometric_field(h, w, s):  # the reference field from baseline 2, the other skies from baseline 1
        return (baseline_geometric if (h, w) == (600, 640) else baseline_uniform)(height=h, width=w, seed=s).image

    same = one_field_null(uniform, 40, seed=5, field_shape=(600, 640))
    assert same["n_real"] == same["n_fake"] == 160
    assert 0.35 < same["accuracy"] < 0.6  # 0.42-0.51 over seeds 5-8
    other = one_field_null(geometric_field, 40, seed=5, field_shape=(600, 640))
    assert other["accuracy"] > 0.7  # 0.77-0.91 over seeds 5-8


def test_banded_tiles_stay_inside_their_band():
    from galaxy_core.metrics.realism import banded_tiles

    lum = np.tile(np.repeat(np.arange(4, dtype=np.float64), 150)[None, :], (300, 1))  # band b holds the value b
    tiles, band = banded_tiles(lum, 40, seed=3, tile=128, bands=4)
    assert tiles.shape == (40, 128, 128) and list(band[:5]) == [0, 1, 2, 3, 0]
    assert all((t == b).all() for t, b in zip(tiles, band))
    with pytest.raises(ValueError, match="cannot hold"):
        banded_tiles(lum, 4, tile=160, bands=4)
