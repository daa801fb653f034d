"""Calibrations of composed skies: sharpness, pixel intensities, faint sources, grouped C2ST,
class-matched grids, the field's stars and the sources below the catalogue's limit."""

import numpy as np
import torch
import pytest
from scipy import ndimage

from galaxy_core.sky.calibrate import (apply_transfer, faint_catalogue, FaintSources, field_star_stamps, FieldStars, map_pixels, pixel_quantiles, real_stamp_reference, ring_power, sharpness_transfer)
from galaxy_core.sky.grids import grid_class_fractions
from galaxy_core.sky.background import Background
from galaxy_core.sky.compose import compose_sky, FixedPositions
from galaxy_core.sky.stamps import galaxy_flux, real_galaxy_flux

QUIET = Background(level=(0.05, 0.05, 0.05), sigma=(0.01, 0.01, 0.01))


def real_flux(n=120):
    from galaxy_core.data.hdf import prepare_hdf

    return galaxy_flux(prepare_hdf(resolution=32, progress=False).to_model_range()[:n])


def test_transfer_keeps_every_band_total_and_undoes_a_blur():
    real = real_flux()
    blurred = ndimage.gaussian_filter(real, (0, 0, 0.7, 0.7), mode="wrap")  # a "too smooth model"
    t = sharpness_transfer(blurred)
    assert t[0] == 1.0 and t[8] > 1.2  # 4 px scales: the blur took power away
    out = apply_transfer(blurred, t)
    np.testing.assert_allclose(out.sum(axis=(2, 3)), blurred.sum(axis=(2, 3)), rtol=1e-4, atol=1e-3)
    ref = real_stamp_reference(resolution=32)
    target = np.maximum(ref["power"] - ref["noise_power"], 0.05 * ref["power"])
    k = np.arange(1, 11)
    k = k[t[k] < 3.0]  # where the gain is below its clip, the filtered power is the target's
    assert len(k) >= 8
    np.testing.assert_allclose(np.log10(ring_power(out)[k]), np.log10(target[k]), atol=0.05)
    assert np.all(np.log10(ring_power(blurred)[8:11] / target[8:11]) < -0.25)  # (before: 0.3-0.5 dex short)


def test_background_noise_inside_the_real_masks_is_below_the_galaxy_power_at_large_scales():
    ref = real_stamp_reference(resolution=32)
    assert ref["power"][0] == pytest.approx(1.0, rel=0.5)
    assert np.all(ref["noise_power"][:6] < 0.1 * ref["power"][:6])  # galaxies dominate above 5 px
    assert ref["noise_power"][14] > 0.3 * ref["power"][14]  # near 2 px the stamps' own noise is comparable


def test_map_pixels_gives_the_target_distribution_and_coverage_and_keeps_colours():
    real = real_flux()
    inside = ndimage.binary_dilation(real.mean(axis=1) > 0, iterations=2, axes=(1, 2))
    model = 0.6 * np.clip(real, 0, None) ** 1.3 + 0.003 * inside[:, None]  # distorted, and wider masks
    out = map_pixels(model, pixel_quantiles(model), pixel_quantiles(real))
    q = np.linspace(0.5, 0.98, 13)
    lum_out, lum_real = out.mean(axis=1), real.mean(axis=1)
    np.testing.assert_allclose(np.quantile(lum_out, q), np.quantile(lum_real, q), rtol=0.03, atol=2e-4)
    cover = lambda lum: float((lum > 0).mean())  # noqa: E731
    assert cover(model.mean(axis=1)) > 1.2 * cover(lum_real)
    assert cover(lum_out) == pytest.approx(cover(lum_real), rel=0.05)  # the faintest extra pixels went to 0
    m = model.mean(axis=1) > 0.01
    ratio = (out.mean(axis=1) / np.where(m, model.mean(axis=1), 1.0))[:, None]  # one factor per pixel ...
    np.testing.assert_allclose((out * m[:, None])[:, :, m.any(0)], (model * ratio * m[:, None])[:, :, m.any(0)],
                               rtol=1e-4, atol=1e-6)  # ... applied to all three bands


def test_faint_sources_follow_the_catalogue():
    cat = faint_catalogue()
    assert len(cat["a"]) > 1000 and 1e-3 < cat["density"] < 2e-3
    src = FaintSources()
    rng = np.random.default_rng(0)
    counts = [len(src((256, 256), rng)["x"]) for _ in range(20)]
    lam = cat["density"] * 256 * 256
    assert abs(np.mean(counts) - lam) < 4 * np.sqrt(lam / 20)
    s = src((256, 256), np.random.default_rng(1))
    sides = np.array([st.shape[-1] for st in s["stamps"]])
    assert len(sides) == len(s["x"]) and all(st.shape == (3, k, k) for st, k in zip(s["stamps"], sides))
    assert np.all((sides >= 15) & (sides <= 63) & (sides % 2 == 1)) and (sides == 15).any()  # larger for wide ones
    assert np.all((s["x"] >= -0.5) & (s["x"] < 255.5) & (s["y"] >= -0.5) & (s["y"] < 255.5))
    totals = np.array([st.sum() for st in s["stamps"]])
    lo, hi = np.percentile(cat["flux"].sum(axis=1), [1, 99])
    assert np.median(totals) == pytest.approx(np.median(cat["flux"].sum(axis=1)), rel=0.3)
    assert np.all((totals >= lo * 0.99 - 1e-6) | (totals < lo))  # flux = a catalogue row's (within the stamp)
    # the centre of light sits at the drawn sub-pixel position
    i = int(np.argmax(totals))
    d = np.arange(sides[i]) - (sides[i] - 1) / 2
    lum = s["stamps"][i].sum(axis=0)
    cx = (lum.sum(axis=0) * d).sum() / lum.sum()
    assert cx == pytest.approx(s["x"][i] - np.round(s["x"][i]), abs=0.15)


def box_galaxies(cls, rng):
    """A 3 x 3 box of flux 1 per band in a 9 x 9 stamp for every requested galaxy."""
    g = np.zeros((len(cls), 3, 9, 9), np.float32)
    g[:, :, 3:6, 3:6] = 1.0
    return g


def two_galaxy_cells() -> np.ndarray:
    """An 8 x 8 grid with a small (class 1) and a large (class 3) galaxy."""
    cells = np.zeros((8, 8), np.int64)
    cells[2, 3], cells[6, 1] = 1, 3
    return cells


def test_compose_with_faint_sources_keeps_the_flux_books_and_the_galaxies():
    kw = dict(height=200, width=260, positions=FixedPositions(two_galaxy_cells()), galaxies=box_galaxies,
              cell_px=16, background=QUIET, seed=5)
    plain = compose_sky(**kw)
    sky = compose_sky(**kw, faint=FaintSources())
    t = sky.truth
    faint = t[t["cls"] == -1]
    assert len(faint) > 40 and len(t[t["cls"] != -1]) == len(plain.truth)
    np.testing.assert_array_equal(np.asarray(t[t["cls"] != -1]["x"]), np.asarray(plain.truth["x"]))  # same streams
    assert sky.background_sum == pytest.approx(plain.background_sum)
    total = float(sky.image.sum(dtype=np.float64))
    assert total == pytest.approx(sky.background_sum + float(np.sum(t["flux"])), rel=1e-6)


def test_detection_report_does_not_count_faint_sources_as_missed_galaxies():
    from astropy.table import Table

    from galaxy_core.sky.detect import detection_report

    img = np.zeros((3, 96, 96), np.float32)
    rng = np.random.default_rng(0)
    img += 0.01 * rng.standard_normal(img.shape).astype(np.float32)
    d = np.arange(96)
    for x, y in [(20, 20), (70, 60)]:
        img += 0.5 * np.exp(-((d[None] - x) ** 2 + (d[:, None] - y) ** 2) / 8.0).astype(np.float32)
    truth = Table({"x": [20.0, 70.0, 50.0], "y": [20.0, 60.0, 10.0], "flux": [30.0, 30.0, 0.5], "cls": [1, 2, -1]})
    rep = detection_report(img, truth, radius=3.0)
    assert rep.completeness == 1.0 and len(rep.matched) == 2


def test_grouped_classifier_test_does_not_reward_memorising_overlapping_tiles():
    from galaxy_core.metrics.realism import classifier_test

    rng = np.random.default_rng(0)
    # real: 8 "regions", 25 near-copies of each (overlapping tiles); fake: the same distribution
    centres = rng.normal(size=(8, 10))
    real = np.repeat(centres, 25, axis=0) + 0.01 * rng.normal(size=(200, 10))
    fake = rng.normal(size=(200, 10))
    plain = classifier_test(real, fake)["accuracy"]
    grouped = classifier_test(real, fake, folds=4, groups=(np.repeat(np.arange(8) % 4, 25), np.arange(200) % 4))
    assert plain > 0.8  # the classifier recognises the regions it has seen
    assert grouped["accuracy"] < 0.65  # and cannot tell new ones from the fake set


def test_shipped_model_galaxies_sharpened_keep_their_flux_and_pixel_match_the_data():
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir
    from galaxy_core.sky.compose import ModelGalaxies

    model = load_pretrained(checkpoints_dir() / "dcgan_hdf32.json")
    cls = np.full(300, 2)
    raw = ModelGalaxies(model)(cls, np.random.default_rng(5))
    sharp = ModelGalaxies(model, sharpen=True)(cls, np.random.default_rng(5))  # same latents, filtered
    np.testing.assert_allclose(sharp.sum(axis=(1, 2, 3)), raw.sum(axis=(1, 2, 3)), rtol=1e-4, atol=1e-2)
    ref = real_stamp_reference(resolution=32)
    target = np.log10(np.maximum(ref["power"] - ref["noise_power"], 0.05 * ref["power"]))
    k = np.arange(8, 12)  # 2.7-4 px: the scales the generator draws too smooth
    assert np.all(np.log10(ring_power(raw)[k]) < target[k] - 0.15)
    np.testing.assert_allclose(np.log10(ring_power(sharp)[k]), target[k], atol=0.1)
    both = ModelGalaxies(model, sharpen=True, pixel_match=True)(cls, np.random.default_rng(5))
    q = np.linspace(0.1, 0.9, 9)
    lum_b, lum_r = both.mean(axis=1), real_galaxy_flux(32).mean(axis=1)  # above the field's sky level
    lum_s = sharp.mean(axis=1)
    err_b = np.abs(np.log(np.quantile(lum_b[lum_b > 0], q) / np.quantile(lum_r[lum_r > 0], q)))
    err_s = np.abs(np.log(np.quantile(lum_s[lum_s > 0], q) / np.quantile(lum_r[lum_r > 0], q)))
    assert err_b.max() < 0.1 and err_s.max() > 0.2


def test_grid_class_fractions_are_those_of_the_grid_catalogue():
    from galaxy_core.sky.grids import GridOptions, hdf_sources, tile_grids

    f = grid_class_fractions()
    assert f.shape == (4,) and f.sum() == pytest.approx(1.0)
    _, info = tile_grids(hdf_sources(), GridOptions(count=1024))
    assert 1.0 - f[0] == pytest.approx(info["mean_occupied"] / 32**2, rel=1e-9)
    assert np.all((f[1:] > 0.025) & (f[1:] < 0.06))  # tercile classes: similar shares of the ~12 % occupied cells
    occ = grid_class_fractions(classes=False)
    assert occ[1] == pytest.approx(1.0 - f[0], rel=1e-9)


def test_class_matched_positions_only_remove_cells_of_overfilled_classes():
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir
    from galaxy_core.sky.compose import ModelPositions

    # the shipped model draws about the data's class fractions, so matching barely thins it
    shipped = ModelPositions(load_pretrained(checkpoints_dir() / "positions_hdf_cond.json"), match_classes=True)
    assert np.all(shipped.keep_probabilities() > 0.85)
    # a position model that over-fills every class: the shipped one with its generator re-initialised
    model = load_pretrained(checkpoints_dir() / "positions_hdf_cond.json")
    torch.manual_seed(0)
    for m in model.G.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    plain, matched = ModelPositions(model), ModelPositions(model, match_classes=True)
    keep = matched.keep_probabilities()
    assert np.all(keep[1:] < 0.5)
    assert keep[0] == 1.0 and np.all((keep > 0) & (keep <= 1))
    data = grid_class_fractions()
    a = np.stack([plain(np.random.default_rng(s)) for s in range(48)])
    b = np.stack([matched(np.random.default_rng(s)) for s in range(48)])
    # same latents and cell draws: thinning only empties cells, never adds or relabels one
    assert np.all((b == a) | (b == 0))
    assert (b > 0).sum() < (a > 0).sum()
    for c in (1, 2, 3):
        fa, fb = (a == c).mean(), (b == c).mean()
        if keep[c] == 1.0:
            assert fb == fa
        else:  # thinned towards the data's fraction of that class
            assert abs(fb - data[c]) < abs(fa - data[c]) and fb == pytest.approx(data[c], rel=0.25)


def test_field_star_stamps_are_the_catalogue_stars_centred_with_their_cores():
    ref = field_star_stamps()
    st = ref["stamps"]
    assert st.shape[0] == 4 and st.shape[1] == 3 and st.shape[2] == st.shape[3] and st.shape[2] % 2 == 1
    assert ref["density"] == pytest.approx(4 / (1000 * 872))
    c = (st.shape[-1] - 1) // 2
    from galaxy_core.sky.background import hdf_background

    level = np.asarray(hdf_background().level)[:, None, None]
    for s in st:
        lum = s.sum(axis=0)
        y, x = np.unravel_index(np.argmax(lum), lum.shape)
        assert abs(y - c) <= 3 and abs(x - c) <= 3  # the star sits at the stamp centre
        assert (s + level).max() > 0.95  # its core reaches the 8-bit ceiling of the field
        assert np.all(s.sum(axis=(1, 2)) > 0)
    np.testing.assert_allclose(ref["flux"], st.sum(axis=(1, 2, 3), dtype=np.float64))


def test_field_stars_are_drawn_at_the_field_density_with_their_own_flux():
    stars = FieldStars()
    rng = np.random.default_rng(0)
    draws = [stars((512, 512), rng) for _ in range(150)]
    lam = stars.density * 512 * 512
    counts = np.array([len(d["x"]) for d in draws])
    assert abs(counts.mean() - lam) < 4 * np.sqrt(lam / len(counts))
    flux = field_star_stamps()["flux"]
    for d in draws[:20]:
        assert np.all((d["x"] >= 0) & (d["x"] < 512) & (d["y"] >= 0) & (d["y"] < 512))
        for s in d["stamps"]:  # a turned or flipped copy of one of the field's stars
            assert np.min(np.abs(flux - s.sum(dtype=np.float64))) < 1e-3 * flux.min()


def test_compose_with_stars_keeps_the_flux_books_and_the_other_sources():
    kw = dict(height=300, width=260, positions=FixedPositions(two_galaxy_cells()), galaxies=box_galaxies,
              cell_px=16, background=QUIET, faint=FaintSources(), seed=3)
    plain = compose_sky(**kw)
    sky = compose_sky(**kw, stars=FieldStars(density=3e-5))
    t = sky.truth
    assert (t["cls"] == -2).sum() >= 1 and sky.meta["stars"]
    rest = t[t["cls"] != -2]
    np.testing.assert_array_equal(np.asarray(rest["x"]), np.asarray(plain.truth["x"]))  # other streams unchanged
    np.testing.assert_array_equal(np.asarray(rest["flux"]), np.asarray(plain.truth["flux"]))
    total = float(sky.image.sum(dtype=np.float64))
    assert total == pytest.approx(sky.background_sum + float(np.sum(t["flux"])), rel=1e-6)
    # stars near an edge are clipped: the truth records only the flux that landed in the sky
    assert np.all(np.asarray(t[t["cls"] == -2]["flux"]) <= field_star_stamps()["flux"].max() + 1e-3)


def test_detection_report_does_not_count_stars_as_missed_galaxies():
    from astropy.table import Table

    from galaxy_core.sky.detect import detection_report

    img = 0.01 * np.random.default_rng(0).standard_normal((3, 96, 96)).astype(np.float32)
    d = np.arange(96)
    for x, y in [(20, 20), (70, 60)]:
        img += 0.5 * np.exp(-((d[None] - x) ** 2 + (d[:, None] - y) ** 2) / 8.0).astype(np.float32)
    truth = Table({"x": [20.0, 70.0], "y": [20.0, 60.0], "flux": [30.0, 30.0], "cls": [1, -2]})
    rep = detection_report(img, truth, radius=3.0)
    assert rep.completeness == 1.0 and len(rep.matched) == 1 and rep.purity == 1.0
    assert rep.purity_galaxies == 0.5  # the star's detection is real but not a galaxy
    # each detection says what it was matched to (the overlay draws the three kinds apart)
    from galaxy_core.sky.detect import DETECTED_GALAXY, DETECTED_SOURCE, DETECTED_SPURIOUS
    near_star = np.hypot(rep.detections["x"] - 70, rep.detections["y"] - 60) < 1.5
    assert sorted(rep.kind.tolist()) == [DETECTED_GALAXY, DETECTED_SOURCE] and rep.kind[near_star] == [DETECTED_SOURCE]
    # a faint source 2.5 px from a detection is not its match: dense faint sources must not
    # turn chance coincidences into true detections
    off = Table({"x": [20.0, 72.5], "y": [20.0, 60.0], "flux": [30.0, 30.0], "cls": [1, -1]})
    rep = detection_report(img, off, radius=3.0)
    assert rep.completeness == 1.0 and rep.purity == 0.5 and rep.source_radius == 1.5
    assert sorted(rep.kind.tolist()) == [DETECTED_SPURIOUS, DETECTED_GALAXY]
    assert detection_report(img, off, radius=3.0, source_radius=3.0).purity == 1.0


def test_subcatalogue_sources_are_sources_not_noise_peaks():
    from scipy import ndimage

    from galaxy_core.sky.calibrate import subcatalogue_sources
    from galaxy_core.sky.background import hdf_background, source_mask

    sub = subcatalogue_sources()
    n = len(sub["a"])
    assert n > 500 and sub["density"] == pytest.approx(n / (1000 * 872))
    assert np.all(sub["b"] <= sub["a"] + 1e-12) and np.median(sub["flux"].sum(axis=1)) > 0
    # the measured background noise over a field-sized area, masked the same way, has far fewer such parts
    bg = hdf_background()
    noise = bg.draw((872, 1000), np.random.default_rng(0))
    _, n_noise = ndimage.label(source_mask(np.moveaxis(noise, 0, -1), grow=0))
    assert n_noise < 0.2 * n
    both = FaintSources(subcatalogue=True)
    assert both.density == pytest.approx(faint_catalogue()["density"] + sub["density"])
    assert len(both.cat["a"]) == len(faint_catalogue()["a"]) + n


def test_truncated_moment_fraction_matches_a_gaussian_cut_at_an_isophote():
    from galaxy_core.sky.calibrate import truncated_moment_fraction

    sigma = 6.0
    d = np.arange(-60, 61, dtype=np.float64)
    prof = np.exp(-(d[None] ** 2 + d[:, None] ** 2) / (2 * sigma**2))
    x2 = np.broadcast_to(d[None] ** 2, prof.shape)
    for f in (0.05, 0.2, 0.5, 0.7):
        inside = prof >= f
        measured = (prof * x2)[inside].sum() / prof[inside].sum()
        assert measured / sigma**2 == pytest.approx(truncated_moment_fraction(f), rel=0.05)  # pixels: ~3 %
    assert truncated_moment_fraction(1e-9) == pytest.approx(1.0, abs=1e-6)
    assert truncated_moment_fraction(0.999) < 1e-3



def test_catalogue_grids_are_the_grid_catalogue_and_compose_with_real_stamps():
    from galaxy_core.sky.compose import CatalogueGrids, StampGalaxies

    ref = CatalogueGrids()
    assert ref.grids.shape == (1024, 32, 32) and ref.grid == 32
    f = np.bincount(ref.grids.ravel(), minlength=4) / ref.grids.size
    assert f == pytest.approx(grid_class_fractions(), abs=1e-12)
    a, b = ref(np.random.default_rng(3)), ref(np.random.default_rng(3))
    assert np.array_equal(a, b) and any(np.array_equal(a, g) for g in ref.grids)
    a[:] = 0  # a copy: the catalogue is not changed by its user
    assert ref.grids.sum() > 0 and ref(np.random.default_rng(3)).sum() > 0
    sky = compose_sky(height=512, width=512, positions=ref, galaxies=StampGalaxies(), background=QUIET, seed=5)
    pos_rng = np.random.default_rng(np.random.SeedSequence([5, 0]).spawn(5)[1])  # the composer's stream
    grid = ref(pos_rng)
    # one placed galaxy per occupied cell, of that cell's class
    assert len(sky.truth) == int((grid > 0).sum()) > 50
    assert np.array_equal(np.sort(np.asarray(sky.truth["cls"])), np.sort(grid[grid > 0]))


def test_faint_source_profiles_keep_the_catalogue_moments_and_flux():
    # two known sources, measured moments (on pixels) a = 2.6 / 1.2 px, b = 1.0 / 0.8 px, along x, flux 1
    # per band: the wide one needs a stamp larger than the default 15 px to keep its Moffat wings
    cat = {"flux": np.ones((2, 3)), "a": np.array([2.6, 1.2]), "b": np.array([1.0, 0.8]), "theta": np.zeros(2),
           "density": 1.0}
    out = {}
    for p in ("moffat", "gaussian"):
        src = FaintSources(profile=p)
        src.cat, src.density = cat, 2.0 / (64 * 64)
        rng = np.random.default_rng(2)
        while True:  # a draw that holds both sources
            o = src((64, 64), rng)
            idx = [int(np.argmax([st.shape[-1] for st in o["stamps"]]))] if len(o["x"]) else []
            if len(o["x"]) >= 2 and o["stamps"][idx[0]].shape[-1] > 15:
                break
        out[p] = o
        for st, x, y in zip(o["stamps"], o["x"], o["y"]):
            lum = st.astype(np.float64).sum(axis=0)
            assert lum.sum() == pytest.approx(3.0, rel=1e-5)  # the catalogue flux, all bands
            k = st.shape[-1]
            d = np.arange(k) - (k - 1) / 2
            w = lum / lum.sum()
            cx, cy = x - np.round(x), y - np.round(y)
            var_x = (w * (d[None, :] - cx) ** 2).sum()
            var_y = (w * (d[:, None] - cy) ** 2).sum()
            j = 0 if var_x > 2.0 else 1  # which of the two catalogue rows this is
            # the catalogue's second moments, plus the pixel's own (1 - 1/25) / 12 from the 5 x 5 integration;
            # no wing is cut off, not even the wide Moffat's
            assert var_x == pytest.approx(cat["a"][j] ** 2 + 0.08, rel=0.04), (p, j)
            assert var_y == pytest.approx(cat["b"][j] ** 2 + 0.08, rel=0.04), (p, j)
    small = {p: min(o["stamps"], key=lambda st: st.shape[-1]) for p, o in out.items()}
    peak = {p: st.sum(axis=0).max() / st.sum() for p, st in small.items()}
    assert peak["moffat"] > 1.2 * peak["gaussian"]  # same moments, sharper core
    for bad in (dict(profile="sersic"), dict(beta=2.0), dict(oversample=0)):
        with pytest.raises(ValueError):
            FaintSources(**bad)


def test_galaxy_flux_takes_off_a_known_sky_level_instead_of_the_border_median():
    x = np.full((1, 3, 32, 32), -0.8, np.float32)  # sky 0.1 in [0, 1]
    x[0] += 0.1  # the wings of a large galaxy: +0.05 over the whole stamp, border included
    x[0, :, 12:20, 12:20] = 0.6  # its core: 0.8 in [0, 1]
    border, level = galaxy_flux(x), galaxy_flux(x, level=(0.1, 0.1, 0.1))
    mask = level[0, 0] != 0
    assert mask.sum() == 144 and mask[10:22, 10:22].all()  # the core grown by the 3 x 3 smoothing and the dilation
    assert np.all(mask[border[0, 0] != 0])  # the same mask either way (the ring is 0 above the border median)
    core = (slice(None), slice(None), slice(12, 20), slice(12, 20))
    np.testing.assert_allclose(border[core], 0.65, rtol=1e-5)  # the border median (0.15) dims the core
    np.testing.assert_allclose(level[core], 0.7, rtol=1e-5)  # the true height above the sky


def test_real_galaxy_flux_above_the_field_level_is_brighter_than_above_the_border():
    from galaxy_core.sky.stamps import real_galaxy_flux, real_stamp_fluxes

    lvl, brd = real_galaxy_flux(32, sky="level"), real_galaxy_flux(32, sky="border")
    assert not lvl.flags.writeable and lvl.shape == brd.shape
    assert np.all(lvl[brd != 0] != 0)  # one mask (a pixel at the border median is 0 above it, not outside it)
    gain = lvl.sum(axis=(1, 2, 3)) / brd.sum(axis=(1, 2, 3))
    assert np.median(gain) > 1.0 and np.percentile(gain, 90) > 1.05  # stamps with wings at their border gain most
    assert real_stamp_fluxes(32)[0] == pytest.approx(np.sort(lvl.sum(axis=(1, 2, 3), dtype=np.float64)))
    assert real_stamp_reference(resolution=32)["pixels"] == pytest.approx(pixel_quantiles(lvl))
    with pytest.raises(ValueError, match="sky must be one of"):
        real_galaxy_flux(32, sky="median")


def test_faint_source_transfer_measures_less_fine_structure_in_the_field():
    from galaxy_core.sky.calibrate import faint_damping, faint_source_transfer

    t = faint_source_transfer()  # forward-modelled stacks of the field's and the composer's faint sources
    assert t.shape == (8,) and abs(t[1] - 1) < 0.1  # the same at 15 px scales ...
    assert t[7] < 0.85 and t[6] < 1.0  # ... less at 2.1 and 2.5 px periods
    d = faint_damping()
    assert d[0] == 1.0 and np.all(d <= 1.0) and d[7] == pytest.approx(t[7])


def test_faint_damping_keeps_each_source_and_its_flux_and_takes_off_the_fine_structure():
    from galaxy_core.sky.calibrate import FAINT_STACK_SIDE, faint_damping

    plain = FaintSources(damping=False)((256, 256), np.random.default_rng(4))
    damped = FaintSources()((256, 256), np.random.default_rng(4))  # the same draws, filtered
    np.testing.assert_array_equal(plain["x"], damped["x"])
    for p, d in zip(plain["stamps"], damped["stamps"]):
        assert p.shape == d.shape
        np.testing.assert_allclose(d.sum(axis=(1, 2)), p.sum(axis=(1, 2)), rtol=1e-5, atol=1e-7)
    a = np.fft.fft2(np.stack([p for p in plain["stamps"] if p.shape[-1] == FAINT_STACK_SIDE]).sum(axis=1))
    b = np.fft.fft2(np.stack([d for d in damped["stamps"] if d.shape[-1] == FAINT_STACK_SIDE]).sum(axis=1))
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(15), np.fft.fftfreq(15), indexing="ij"))  # cycles per pixel
    t = np.interp(f, np.arange(8) / FAINT_STACK_SIDE, faint_damping(), right=faint_damping()[-1])
    ok = np.abs(a) > 1e-3 * np.abs(a[:, :1, :1])
    np.testing.assert_allclose((np.abs(b) / np.maximum(np.abs(a), 1e-30))[ok], np.broadcast_to(t, a.shape)[ok], rtol=1e-3)
    assert t.min() < 0.75  # the 2.1 px structure is damped, the rest kept


def _measured_once(monkeypatch, tmp_path, cached, measure_name: str, glob: str):
    """Call ``cached`` (an lru-cached, disk-cached measurement of the calibrate module) in an
    empty cache, then again as a new process would with ``measure_name`` made to fail: returns
    (measured, read back, the cache entry). The lru cache is cleared around it."""
    from galaxy_core import paths
    from galaxy_core.sky import calibrate

    monkeypatch.setattr(paths, "cache_dir", lambda: tmp_path)
    cached.cache_clear()
    measured = cached()
    (entry,) = (tmp_path / "sky").glob(glob)
    cached.cache_clear()
    with monkeypatch.context() as m:
        m.setattr(calibrate, measure_name, lambda *a: (_ for _ in ()).throw(AssertionError("measured again")))
        read = cached()
    cached.cache_clear()
    return measured, read, entry


def test_the_subcatalogue_is_measured_once_and_read_back_exactly(tmp_path, monkeypatch):
    """A new process reads the sources below the detection limit from the cache, equal to what
    was measured; a damaged entry is measured again."""
    from galaxy_core.sky import calibrate

    fn = calibrate.subcatalogue_sources
    try:
        measured, read, entry = _measured_once(monkeypatch, tmp_path, fn, "_measure_subcatalogue", "subcatalogue-*.npz")
        assert set(read) == set(measured) and read["density"] == measured["density"]
        assert all(np.array_equal(read[k], measured[k]) for k in ("flux", "a", "b", "theta"))
        entry.write_bytes(b"damaged")
        assert np.array_equal(fn()["a"], measured["a"])  # measured again
    finally:
        fn.cache_clear()


def test_the_field_stars_are_measured_once_and_read_back_exactly(tmp_path, monkeypatch):
    """A new process reads the field's star stamps from the cache, equal to what was cut from
    the field; another ``link_px`` gets its own entry; a damaged entry is measured again."""
    from galaxy_core.sky import calibrate

    fn = calibrate.field_star_stamps
    try:
        measured, read, entry = _measured_once(monkeypatch, tmp_path, fn, "_measure_field_stars", "stars-*.npz")
        assert read["density"] == measured["density"] and read["stamps"].dtype == np.float32
        assert np.array_equal(read["stamps"], measured["stamps"]) and np.array_equal(read["flux"], measured["flux"])
        near = fn(link_px=20.0)  # fewer spike fragments linked to each star
        assert len(list((tmp_path / "sky").glob("stars-*.npz"))) == 2
        assert near["flux"].sum() < measured["flux"].sum()
        entry.write_bytes(b"damaged")
        fn.cache_clear()
        assert np.array_equal(fn()["stamps"], measured["stamps"])  # measured again
    finally:
        fn.cache_clear()
