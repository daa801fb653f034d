"""The sky level and the noise amplitude vary across a composed sky as measured on the data:
the fields have the declared spread, correlation and scale, are seamless across tiles, are
recovered by the measurement, and touch no other random draw."""

import numpy as np
import pytest

from galaxy_core.sky.background import Background, block_mean_sd, measure_modulation, modulation_fields, SkyModulation
from galaxy_core.sky.compose import compose_sky, FixedPositions

TRUE = SkyModulation(level_sd=0.004, noise_sd=0.08, rho=0.6, scale=30.0)
WHITE = Background(level=(0.1, 0.1, 0.1), sigma=(0.02, 0.02, 0.02))


def test_block_mean_sd_matches_smoothed_white_noise():
    from scipy.ndimage import gaussian_filter

    g = gaussian_filter(np.random.default_rng(0).standard_normal((1920, 1920)), 20.0, mode="wrap")
    g /= g.std()
    for block in (1, 48, 120):
        got = g.reshape(1920 // block, block, 1920 // block, block).mean(axis=(1, 3)).std()
        assert got == pytest.approx(block_mean_sd(block, 20.0), rel=0.12)
    assert block_mean_sd(1, 20.0) == 1.0 and block_mean_sd(120, 20.0) < block_mean_sd(48, 20.0) < 1.0


def test_fields_have_unit_variance_the_declared_correlation_and_no_seams():
    coarse = TRUE.coarse(2048, 2048, np.random.default_rng(1))
    f = TRUE.at(coarse, 0, 0, 2048, 2048)
    assert f.shape == (2, 2048, 2048) and f.dtype == np.float32
    np.testing.assert_allclose(f.std(axis=(1, 2)), 1.0, atol=0.12)
    assert np.corrcoef(f[0].ravel(), f[1].ravel())[0, 1] == pytest.approx(0.6, abs=0.1)
    # correlation ~ exp(-d²/(4 scale²)): about 0.78 at 30 px, 0.02 at 120 px
    lag = lambda d: np.corrcoef(f[0, :, :-d].ravel(), f[0, :, d:].ravel())[0, 1]
    assert lag(30) == pytest.approx(np.exp(-0.25), abs=0.1) and abs(lag(120)) < 0.15
    # a patch is the same whichever tiling asks for it
    np.testing.assert_array_equal(TRUE.at(coarse, 512, 700, 300, 200), f[:, 512:812, 700:900])


def test_draw_applies_gain_and_offset_and_nothing_without_fields():
    rng = lambda: np.random.default_rng(5)
    mod_bg = Background(level=WHITE.level, sigma=WHITE.sigma, modulation=TRUE)
    plain = mod_bg.draw((64, 64), rng())
    np.testing.assert_array_equal(plain, WHITE.draw((64, 64), rng()))
    fields = np.stack([np.full((64, 64), 1.0, np.float32), np.full((64, 64), -2.0, np.float32)])
    got = mod_bg.draw((64, 64), rng(), fields)
    np.testing.assert_allclose(got, 0.1 + (plain - 0.1) * np.exp(0.08) - 2 * 0.004, atol=1e-6)


def _modulated_field(seed, shape=(960, 1200)):
    bg = Background(level=WHITE.level, sigma=WHITE.sigma, modulation=TRUE)
    x = bg.draw(shape, np.random.default_rng(seed), modulation_fields(bg, *shape, seed)(0, 0, *shape))
    mask = np.zeros(shape, bool)
    for y0, x0 in np.random.default_rng(seed + 1).integers(0, 1150, (60, 2)):
        mask[y0 : y0 + 25, x0 : x0 + 25] = True  # "sources": left out
        x[:, y0 : y0 + 25, x0 : x0 + 25] += 0.5
    return np.moveaxis(x, 0, -1), mask


def test_measurement_recovers_a_known_modulation():
    x, mask = _modulated_field(7)
    m = measure_modulation(x, mask, WHITE)
    assert m.level_sd == pytest.approx(TRUE.level_sd, rel=0.3)
    assert m.noise_sd == pytest.approx(TRUE.noise_sd, rel=0.3)
    assert m.rho == pytest.approx(TRUE.rho, abs=0.25)
    assert m.scale == pytest.approx(TRUE.scale, rel=0.4)


def test_measurement_of_a_uniform_sky_finds_little_variation():
    shape = (960, 1200)
    x = np.moveaxis(WHITE.draw(shape, np.random.default_rng(3)), 0, -1)
    m = measure_modulation(x, np.zeros(shape, bool), WHITE)
    assert m.level_sd < 0.25 * TRUE.level_sd and m.noise_sd < 0.25 * TRUE.noise_sd


def test_measurement_rejects_bad_blocks_and_a_masked_sky():
    x, mask = _modulated_field(7, shape=(300, 300))
    with pytest.raises(ValueError, match="increasing"):
        measure_modulation(x, mask, WHITE, blocks=(64, 32))
    with pytest.raises(ValueError, match="free enough"):
        measure_modulation(x, np.ones(mask.shape, bool), WHITE)


def test_composed_sky_varies_as_declared_and_keeps_every_other_draw():
    bg = Background(level=WHITE.level, sigma=WHITE.sigma, modulation=TRUE)
    cells = np.zeros((8, 8), np.int64)
    cells[2, 3] = 1

    def galaxies(cls, rng):
        return np.ones((len(cls), 3, 5, 5), np.float32) * rng.uniform(0.1, 1.0, (len(cls), 1, 1, 1)).astype(np.float32)

    kw = dict(height=1024, width=1024, positions=FixedPositions(cells), galaxies=galaxies, cell_px=16, background=bg,
              seed=11)
    on, off = compose_sky(**kw), compose_sky(**kw, modulate=False)
    np.testing.assert_array_equal(np.asarray(on.truth["flux"]), np.asarray(off.truth["flux"]))
    assert on.meta["background"]["modulation"]["scale"] == 30.0 and off.meta["background"]["modulation"] is None
    total = float(on.image.sum(dtype=np.float64))
    assert total == pytest.approx(on.background_sum + float(np.sum(on.truth["flux"])), rel=1e-6)
    kw_bg = {**kw, "galaxies": None}
    levels = lambda sky: sky.image.mean(axis=0)[:960, :960].reshape(20, 48, 20, 48).mean(axis=(1, 3)).std()
    want = TRUE.level_sd * block_mean_sd(48, TRUE.scale)
    assert levels(compose_sky(**kw_bg)) == pytest.approx(want, rel=0.35)
    assert levels(compose_sky(**kw_bg, modulate=False)) < 0.2 * want
    np.testing.assert_array_equal(compose_sky(**kw).image, on.image)


def test_fits_header_states_the_modulation(tmp_path):
    from astropy.io import fits

    from galaxy_core.sky.mosaic import write_sky

    bg = Background(level=WHITE.level, sigma=WHITE.sigma, modulation=TRUE)
    sky = compose_sky(height=64, width=64, positions=FixedPositions(np.zeros((4, 4), np.int64)), galaxies=None,
                      cell_px=16, background=bg, seed=2)
    write_sky(sky, tmp_path / "s", png=False, csv=False)
    hdr = fits.getheader(tmp_path / "s.fits")
    assert (hdr["BKGLEVSD"], hdr["BKGNOISD"], hdr["BKGRHO"], hdr["BKGSCALE"]) == (0.004, 0.08, 0.6, 30.0)
    # the baselines are drawn on the same varying background and say so
    from galaxy_core.sky.baselines import baseline_geometric, baseline_uniform

    for fn in (baseline_uniform, baseline_geometric):
        write_sky(fn(height=64, width=64, seed=1, background=bg), tmp_path / "b", png=False, csv=False)
        assert fits.getheader(tmp_path / "b.fits")["BKGSCALE"] == 30.0
        write_sky(fn(height=64, width=64, seed=1, background=bg, modulate=False), tmp_path / "b", png=False, csv=False)
        assert "BKGSCALE" not in fits.getheader(tmp_path / "b.fits")


def test_the_deep_fields_background_carries_its_measured_variation():
    from galaxy_core.sky.background import hdf_background

    m = hdf_background().modulation
    # about 0.4 of an 8-bit level and 5 % of the noise at a pixel, varying over ~35 px, the two correlated
    assert 0.0008 < m.level_sd < 0.0025 and 0.02 < m.noise_sd < 0.08
    assert 0.2 < m.rho < 0.8 and 15 < m.scale < 80
