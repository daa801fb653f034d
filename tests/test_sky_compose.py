"""Sky composition: the galaxies the grid asks for, flux added exactly, baselines, detection, files."""

import numpy as np
import pytest

from galaxy_core.sky.baselines import Baseline1, Baseline2, baseline_geometric, baseline_uniform
from galaxy_core.sky.background import Background
from galaxy_core.sky.compose import compose_sky, FixedPositions
from galaxy_core.sky.stamps import add_stamp, galaxy_flux
from galaxy_core.sky.detect import detection_report, match
from galaxy_core.sky.mosaic import transform_stamp, write_sky

QUIET = Background(level=(0.05, 0.05, 0.05), sigma=(0.01, 0.01, 0.01))


def gaussian_galaxies(cls, rng, *, side=15):
    """Round Gaussian flux stamps, peak 0.3 per band times the class."""
    d = np.arange(side) - (side - 1) / 2
    g = np.exp(-(d[:, None] ** 2 + d[None] ** 2) / (2 * 1.5**2)).astype(np.float32)
    return np.stack([0.3 * c * np.stack([g, g, g]) for c in np.asarray(cls)]) if len(cls) else np.zeros((0, 3, side, side), np.float32)


def test_add_stamp_clips_at_edges_and_returns_added_flux():
    img = np.zeros((1, 4, 4), np.float32)
    f = add_stamp(img, np.ones((1, 3, 3), np.float32), -1, 2)
    assert f.tolist() == [4.0] and img.sum() == 4.0 and img[0, 2:, :2].sum() == 4.0


def test_compose_places_exactly_the_grid_galaxies_and_adds_flux():
    cells = np.zeros((8, 8), np.int64)
    cells[1, 2], cells[5, 6], cells[7, 0] = 1, 3, 2
    sky = compose_sky(height=200, width=300, positions=FixedPositions(cells), galaxies=gaussian_galaxies,
                      cell_px=16, jitter=0.2, background=QUIET, seed=3)
    # 128 px tiles, 2 rows x 3 columns, the last ones cropped. Cell centres (x, y) in a tile:
    # (40, 24) class 1, (104, 88) class 3, (8, 120) class 2 (jitter <= 3.2 px). Row 0 tiles
    # hold all three but the third tile (x from 256) only x = 296 and 264; row 1 tiles (y from
    # 128) only y = 152. So 3 + 3 + 2 + 1 + 1 + 1 = 11 galaxies.
    assert len(sky.truth) == 11
    assert sorted(sky.truth["cls"].tolist()) == sorted([1, 3, 2, 1, 3, 2, 1, 2, 1, 1, 1])
    empty = compose_sky(height=200, width=300, positions=FixedPositions(cells), galaxies=None, cell_px=16,
                        background=QUIET, seed=3)
    assert empty.background_sum == pytest.approx(sky.background_sum)
    total = float(sky.image.sum(dtype=np.float64))
    assert total == pytest.approx(sky.background_sum + float(np.sum(sky.truth["flux"])), rel=1e-6)
    added = sky.image - empty.image  # the same background stream: only the galaxies differ
    assert float(added.sum(dtype=np.float64)) == pytest.approx(float(np.sum(sky.truth["flux"])), rel=1e-5)
    far = np.ones(sky.image.shape[1:], bool)
    for x, y in zip(sky.truth["x"], sky.truth["y"]):
        far[max(int(y) - 20, 0) : int(y) + 21, max(int(x) - 20, 0) : int(x) + 21] = False
    assert far.sum() > 20000 and np.abs(added[:, far]).max() == 0.0
    # galaxy centres within the jittered cell around the grid's cell centre
    tx = (np.asarray(sky.truth["x"]) % 128) // 16
    ty = (np.asarray(sky.truth["y"]) % 128) // 16
    assert set(zip(ty.astype(int).tolist(), tx.astype(int).tolist())) == {(1, 2), (5, 6), (7, 0)}
    again = compose_sky(height=200, width=300, positions=FixedPositions(cells), galaxies=gaussian_galaxies,
                        cell_px=16, jitter=0.2, background=QUIET, seed=3)
    np.testing.assert_array_equal(again.image, sky.image)


def test_galaxy_flux_keeps_the_central_source_only():
    x = np.full((1, 3, 32, 32), -0.8, np.float32)  # background 0.1 in [0, 1]
    x[0, :, 14:18, 14:18] = 0.6  # central galaxy: 0.8 above background, 16 pixels
    x[0, :, 1:4, 1:4] = 0.6  # a neighbour in the corner
    f = galaxy_flux(x)
    assert f[0, 0, 14:18, 14:18].sum() == pytest.approx(16 * 0.7, rel=1e-5)
    assert f[0, :, :8, :8].sum() == 0.0


def test_baseline_statistics_match_declared_distributions():
    p = Baseline1(density=2e-3)
    sky = baseline_uniform(height=700, width=700, params=p, seed=0, background=QUIET)
    t = sky.truth
    n_exp = p.density * 700 * 700  # 980: Poisson sd 31
    assert abs(len(t) - n_exp) < 4 * np.sqrt(n_exp)
    assert np.mean(t["size"]) == pytest.approx(p.size_mean, abs=4 * p.size_std / np.sqrt(len(t)))
    assert np.std(t["size"]) == pytest.approx(p.size_std, rel=0.1)
    assert np.mean(t["peak"]) == pytest.approx(p.peak_mean, abs=4 * p.peak_std / np.sqrt(len(t)))
    assert np.mean(t["x"]) == pytest.approx(349.5, abs=4 * 700 / np.sqrt(12 * len(t)))  # uniform positions
    q = Baseline2(density_small=2e-3, density_large=1e-3)
    t2 = baseline_geometric(height=700, width=700, params=q, seed=0, background=QUIET).truth
    small, large = t2[t2["cls"] == 1], t2[t2["cls"] == 3]
    assert np.mean(small["size"]) / q.scale_small == pytest.approx(1 / q.p_size_small, rel=0.08)
    assert np.mean(large["size"]) / q.scale_large == pytest.approx(1 / q.p_size_large, rel=0.1)
    assert np.mean(large["peak"]) / q.peak_unit == pytest.approx(1 / q.p_peak_large, rel=0.1)
    assert float(sky.image.sum(dtype=np.float64)) == pytest.approx(sky.background_sum + float(np.sum(t["flux"])), rel=1e-6)


def test_match_is_one_to_one_nearest_first():
    m = match(np.array([[0.0, 0.0], [3.0, 0.0]]), np.array([[1.0, 0.0], [10.0, 10.0]]), radius=2.5)
    assert m.tolist() == [0, -1]


def test_detection_recovers_bright_placed_galaxies():
    rng = np.random.default_rng(0)
    cells = np.zeros((8, 8), np.int64)
    cells[rng.random((8, 8)) < 0.15] = 3
    sky = compose_sky(height=256, width=256, positions=FixedPositions(cells), galaxies=gaussian_galaxies,
                      cell_px=16, jitter=0.2, background=QUIET, seed=0)
    rep = detection_report(sky.image, sky.truth, radius=4.0)
    assert len(sky.truth) > 20
    assert rep.completeness_bright >= 0.9 and rep.purity >= 0.9


def test_transform_keeps_flux_and_write_sky_round_trip(tmp_path):
    st = gaussian_galaxies([1], None)[0]
    out = transform_stamp(st, angle=33.0, scale=1.4)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), st.sum(axis=(1, 2)), rtol=1e-5)
    from astropy.io import fits
    from astropy.table import Table

    cells = np.zeros((4, 4), np.int64)
    cells[1, 1] = 2
    sky = compose_sky(height=64, width=64, positions=FixedPositions(cells), galaxies=gaussian_galaxies,
                      cell_px=16, background=QUIET, seed=1)
    paths = write_sky(sky, tmp_path / "s")
    assert [p.suffix for p in paths] == [".png", ".fits", ".csv"]
    with fits.open(tmp_path / "s.fits") as h:
        np.testing.assert_array_equal(h[0].data, sky.image)
        truth = Table(h["TRUTH"].data)
    assert len(truth) == 1 and truth["flux"][0] == pytest.approx(sky.truth["flux"][0])
    assert Table.read(tmp_path / "s.csv")["cls"][0] == 2


def test_mosaic_from_a_shipped_galaxy_model_adds_flux_and_is_deterministic():
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir
    from galaxy_core.sky.mosaic import compose_mosaic

    model = load_pretrained(checkpoints_dir() / "dcgan_hdf32.json")
    sky = compose_mosaic(model, height=300, width=200, density=1e-3, seed=4, background=QUIET, progress=False)
    assert abs(len(sky.truth) - 60) < 4 * np.sqrt(60)  # Poisson(1e-3 * 300 * 200)
    assert sky.truth.colnames == ["x", "y", "cls", "flux", "flux_r", "flux_g", "flux_b", "tile"]
    total = float(sky.image.sum(dtype=np.float64))
    assert total == pytest.approx(sky.background_sum + float(np.sum(sky.truth["flux"])), rel=1e-6)
    again = compose_mosaic(model, height=300, width=200, density=1e-3, seed=4, background=QUIET, progress=False)
    np.testing.assert_array_equal(again.image, sky.image)
    from galaxy_core.errors import ConfigError

    with pytest.raises(ConfigError, match="8000"):
        compose_mosaic(model, height=8001, width=10, progress=False)


def test_flux_match_maps_model_fluxes_onto_the_real_stamps():
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir
    from galaxy_core.sky.compose import MAX_FLUX_SCALE, ModelGalaxies
    from galaxy_core.sky.stamps import real_stamp_fluxes

    model = load_pretrained(checkpoints_dir() / "dcgan_hdf32.json")
    raw, matched = ModelGalaxies(model), ModelGalaxies(model, flux_match=True)
    cls = np.full(200, 2)
    a = raw(cls, np.random.default_rng(5)).sum(axis=(1, 2, 3))
    b = matched(cls, np.random.default_rng(5)).sum(axis=(1, 2, 3))  # same latents, rescaled
    real = real_stamp_fluxes(32)[0]
    assert abs(np.log(np.median(b) / np.median(real))) < 0.15  # the data's flux scale
    assert abs(np.log(np.median(a) / np.median(real))) > 0.2  # (the raw model's is not: about +0.27)
    ok = a > 1
    assert np.all(np.diff(b[ok][np.argsort(a[ok])]) >= -1e-3)  # brightness order kept
    assert np.all(b[ok] / a[ok] <= MAX_FLUX_SCALE + 1e-4)


def disc_stamps(radii, *, side=32, value=0.2):
    """Flat discs of band value ``value`` centred on (S - 1) / 2, one per radius (pix)."""
    d = np.arange(side) - (side - 1) / 2
    r = np.hypot(d[:, None], d[None])
    out = np.zeros((len(radii), 3, side, side), np.float32)
    for i, rad in enumerate(radii):
        out[i] = (r <= rad) * np.float32(value)
    return out


def test_detection_areas_reproduce_the_catalogue_areas_of_isolated_real_stamps():
    from galaxy_core.data.hdf import prepare_hdf
    from galaxy_core.sky.compose import ClassMatchedGalaxies
    from galaxy_core.sky.stamps import detection_areas

    ds = prepare_hdf(resolution=32, neighbours="sky", progress=False)
    areas = detection_areas(galaxy_flux(ds.to_model_range()))
    cat = np.asarray(ds.catalog["area"], float)
    assert np.corrcoef(np.log1p(areas), np.log(cat))[0, 1] > 0.97  # 0.973 measured
    assert 0.9 < np.median(areas / cat) < 1.1
    cm = ClassMatchedGalaxies(gaussian_galaxies, thresholds=(ds.manifest["size_classes"]["area_lo"],
                                                              ds.manifest["size_classes"]["area_hi"]))
    assert np.mean(cm.classes_of(areas) == cm.classes_of(cat)) > 0.9  # 0.922 measured
    # a bright disc is found whole (smoothing widens it by a pixel or so), an empty stamp has none
    big, none = detection_areas(disc_stamps([8.0, 0.0], value=0.3))
    assert np.pi * 8**2 < big < np.pi * 10**2 and none == 0


def test_class_matched_galaxies_give_each_cell_a_galaxy_of_its_size_class():
    from galaxy_core.sky.compose import ClassMatchedGalaxies
    from galaxy_core.sky.stamps import detection_areas

    def discs(cls, rng):  # an unconditional source: random radii, classes ignored
        return disc_stamps(rng.uniform(2.0, 11.0, len(cls)), value=0.3)

    cm = ClassMatchedGalaxies(discs, candidates=6, thresholds=(73.0, 127.0))
    want = np.array([1, 3, 2, 3, 1, 2, 3, 1])
    got = cm(want, np.random.default_rng(0))
    assert got.shape == (8, 3, 32, 32)
    assert cm.classes_of(detection_areas(got)).tolist() == want.tolist()
    assert np.array_equal(cm(want, np.random.default_rng(0)), got)  # deterministic for the rng
    assert cm(np.zeros(0, np.int64), np.random.default_rng(0)).shape[0] == 0
    # a source with only small galaxies: large cells get the largest there are
    small = ClassMatchedGalaxies(lambda cls, rng: disc_stamps(np.linspace(2.0, 4.0, len(cls)), value=0.3),
                                 candidates=2, thresholds=(73.0, 127.0))
    areas = detection_areas(small(np.array([3, 3]), np.random.default_rng(0)))
    pool = detection_areas(disc_stamps(np.linspace(2.0, 4.0, 4), value=0.3))
    assert sorted(areas.tolist()) == sorted(pool)[-2:]
    with pytest.raises(ValueError, match="candidates"):
        ClassMatchedGalaxies(discs, candidates=0)


def test_random_positions_like_takes_occupancy_and_class_mix_from_grids():
    from galaxy_core.sky.compose import RandomPositions

    g = np.zeros((2, 8, 8), np.int64)
    g[0, 0, :4] = 1          # 4 small
    g[1, 1, :2] = 3          # 2 large
    rp = RandomPositions.like(g)
    assert rp.grid == 8 and rp.p == 6 / 128
    assert np.allclose(rp.class_mix, (4 / 6, 0.0, 2 / 6), atol=1e-6)
    cells = np.stack([rp(np.random.default_rng(s)) for s in range(400)])
    assert abs((cells > 0).mean() - 6 / 128) < 0.005 and not (cells == 2).any()


def test_a_galaxy_models_calibration_is_measured_once_and_read_by_the_next_process(tmp_path, monkeypatch):
    """The sharpening and pixel calibration is written to the cache and read back exactly by a new
    source (as in a new process); a damaged file is measured again, other options get their own."""
    from galaxy_core.sky import compose
    from galaxy_core.sky.pipeline import load_model

    monkeypatch.setattr(compose, "cache_dir", lambda: tmp_path)  # only the calibrations move
    model = load_model("checkpoints/dcgan_hdf32.json")
    first = compose.ModelGalaxies(model, sharpen=True, pixel_match=True)
    cal = first.shape_calibration()
    files = sorted((tmp_path / "sky").glob("galaxy-calibration-*.npz"))
    assert len(files) == 1 and all(cal[k] is not None for k in ("transfer", "model_q", "real_q"))

    def no_generation(*a, **k):
        raise AssertionError("measured again instead of read from the cache")

    again = compose.ModelGalaxies(model, sharpen=True, pixel_match=True)
    again._raw = no_generation
    read = again.shape_calibration()
    assert all(np.array_equal(read[k], cal[k]) for k in cal)
    del again._raw
    cls = np.array([1, 2, 3])
    assert np.array_equal(first(cls, np.random.default_rng(4)), again(cls, np.random.default_rng(4)))

    files[0].write_bytes(b"not a calibration")  # damaged: measured again and rewritten
    mended = compose.ModelGalaxies(model, sharpen=True, pixel_match=True).shape_calibration()
    assert all(np.array_equal(mended[k], cal[k]) for k in cal)
    assert np.array_equal(np.load(files[0])["real_q"], cal["real_q"])
    sharpen_only = compose.ModelGalaxies(model, sharpen=True).shape_calibration()
    assert sharpen_only["model_q"] is None and np.array_equal(sharpen_only["transfer"], cal["transfer"])
    assert len(list((tmp_path / "sky").glob("galaxy-calibration-*.npz"))) == 2  # its own entry


def _small_sky(seed=1):
    cells = np.zeros((4, 4), np.int64)
    cells[1, 1] = 2
    return compose_sky(height=64, width=64, positions=FixedPositions(cells), galaxies=gaussian_galaxies,
                       cell_px=16, background=QUIET, seed=seed)


def test_sky_outputs_keep_every_dot_of_the_name_and_state_their_unit_and_origin(tmp_path):
    """``--out run.v2`` writes run.v2.png/.fits/.csv (two names never share files); an OUT
    ending in one of the three suffixes loses it first; the FITS unit is one astropy reads,
    with ORIGIN, CREATOR and DATE, and the truth table's pixel convention stated."""
    from astropy.io import fits
    from astropy.nddata import CCDData

    sky = _small_sky()
    a = write_sky(sky, tmp_path / "sky_2024.05")
    b = write_sky(_small_sky(seed=2), tmp_path / "sky_2024.06")
    assert [p.name for p in a] == ["sky_2024.05.png", "sky_2024.05.fits", "sky_2024.05.csv"]
    assert len({p.name for p in a + b}) == 6
    assert [p.name for p in write_sky(sky, tmp_path / "other.png")] == ["other.png", "other.fits", "other.csv"]
    assert CCDData.read(a[1]).unit == "" and CCDData.read(a[1]).unit.physical_type == "dimensionless"
    with fits.open(a[1]) as h:
        hdr = h[0].header
        assert hdr["ORIGIN"] == "Galaxy GAN Studio" and hdr["CREATOR"].startswith("Galaxy GAN Studio ")
        assert len(hdr["DATE"]) == 19 and hdr["SEED"] == 1 and hdr["CELL_PX"] == 16
        assert "counted from 0" in str(h["TRUTH"].header["COMMENT"]) and "8-bit band value" in str(hdr["COMMENT"])


def test_a_sky_that_cannot_be_written_whole_leaves_the_earlier_outputs(tmp_path, monkeypatch):
    """The three files are renamed into place together: a FITS that fails to be made leaves
    the earlier PNG, FITS and CSV as they were, and no temporary file."""
    from astropy.io import fits

    first = write_sky(_small_sky(seed=1), tmp_path / "s")
    before = {p.name: p.read_bytes() for p in first}

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fits, "table_to_hdu", broken)
    with pytest.raises(OSError, match="disk full"):
        write_sky(_small_sky(seed=2), tmp_path / "s")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_mosaic_header_names_its_checkpoint_and_a_survey_band_model_its_bands(tmp_path):
    """A mosaic's FITS names the checkpoint (path and id), density and size spread; asked for
    display values, a g/r/i model's bands fill the planes as the display does (i, r, g = R, G,
    B), named so, with a unit note that says they are display values; a position model is
    refused."""
    from astropy.io import fits

    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir
    from galaxy_core.sky.mosaic import compose_mosaic

    sim = load_pretrained(checkpoints_dir() / "dcgan_sim64.json")
    assert sim.channels == ["g", "r", "i"]
    sky = compose_mosaic(sim, height=96, width=96, density=1e-3, seed=3, background=QUIET, progress=False,
                         flux=False)
    (path,) = write_sky(sky, tmp_path / "m", png=False, csv=False)
    with fits.open(path) as h:
        hdr = h[0].header
        assert [hdr["BAND1"], hdr["BAND2"], hdr["BAND3"]] == ["i", "r", "g"]
        assert "BKGSIG1" not in hdr  # the white-noise cards belong to mosaics in linear flux
        assert hdr["SKY MODEL"].endswith("dcgan_sim64.json") and hdr["SKY MODEL_ID"] == sim.id
        assert hdr["SKY DENSITY"] == 1e-3 and hdr["SKY SIZE_SIGMA"] == 0.25
        assert "display values" in " ".join(str(c) for c in hdr["COMMENT"]).replace("  ", " ")
    # the planes are the model's bands in display order: plane 0 (R) is the reddest band, i
    from galaxy_core.io.render import rgb_planes, to_rgb

    x = np.stack([np.full((4, 4), v, np.float32) for v in (-0.5, 0.0, 0.5)])[None]  # g, r, i
    planes, names = rgb_planes(x, ["g", "r", "i"])
    assert names == ["i", "r", "g"] and planes[0, :, 0, 0].tolist() == [0.5, 0.0, -0.5]
    assert to_rgb(x, ["g", "r", "i"])[0, 0, 0].tolist() == [191, 128, 64]  # the PNG shows the same order
    from galaxy_core.errors import ConfigError

    with pytest.raises(ConfigError, match="position model"):
        compose_mosaic(load_pretrained(checkpoints_dir() / "positions_hdf_cond.json"), height=32, width=32,
                       progress=False)


def test_a_flux_model_s_mosaic_adds_linear_flux_in_its_own_bands_and_unit(tmp_path):
    """The g/r/i sim model's mosaic is composed in nanomaggies: planes g, r, i; the image is
    its white noise plus the placed fluxes exactly; that noise is the model's own sky noise;
    the FITS says the unit and the noise; the PNG is the model's own display."""
    from astropy.io import fits
    from astropy.table import Table

    from galaxy_core.errors import ConfigError
    from galaxy_core.io.render import to_rgb
    from galaxy_core.io.stretch import stretch_from_dict
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir
    from galaxy_core.sky.mosaic import FluxGalaxies, compose_mosaic, sky_rgb8

    sim = load_pretrained(checkpoints_dir() / "dcgan_sim64.json")
    sky = compose_mosaic(sim, height=160, width=128, density=1e-3, seed=3, progress=False)
    assert sky.meta["bands"] == ["g", "r", "i"] and sky.meta["unit"] == "nanomaggy" == sim.flux_unit
    assert sky.truth.colnames == ["x", "y", "cls", "flux", "flux_g", "flux_r", "flux_i", "tile"]
    assert len(sky.truth) > 5 and np.all(sky.truth["flux_r"] > 0)
    total = float(sky.image.sum(dtype=np.float64))
    assert total == pytest.approx(sky.background_sum + float(np.sum(sky.truth["flux"])), rel=1e-5)
    # the noise: a sky with no galaxies holds the measured sigma per band, around 0
    sigma = np.asarray(sky.meta["background"]["sigma"])
    np.testing.assert_allclose(sigma, FluxGalaxies(sim).noise_sigma())
    blank = compose_mosaic(sim, height=256, width=256, density=0.0, seed=3, progress=False)
    np.testing.assert_allclose(blank.image.std(axis=(1, 2)), sigma, rtol=0.02)
    assert np.all(np.abs(blank.image.mean(axis=(1, 2))) < 0.01 * sigma)
    # the model's galaxies in flux: a placed galaxy's g/r/i flux ratio is a galaxy colour
    # (r brighter than g for the sim's populations at the median)
    assert np.median(sky.truth["flux_r"] / sky.truth["flux_g"]) > 1
    # FITS: the unit, the bands and the noise
    (path,) = write_sky(sky, tmp_path / "m", png=False, csv=False)
    with fits.open(path) as h:
        hdr = h[0].header
        assert hdr["BUNIT"] == "nanomaggy" and [hdr[f"BAND{i}"] for i in (1, 2, 3)] == ["g", "r", "i"]
        assert [hdr[f"BKGSIG{i}"] for i in (1, 2, 3)] == pytest.approx(sigma.tolist())
        assert "in linear flux" in " ".join(str(c) for c in hdr["COMMENT"]).replace("  ", " ")
        np.testing.assert_array_equal(h[0].data, sky.image)
        assert h["TRUTH"].columns.names[4:7] == ["flux_g", "flux_r", "flux_i"]
        assert hdr["ZP"] == sim.meta["data"]["zero_point"] == 22.5  # the model's magnitude scale
        truth = Table.read(h["TRUTH"])  # the fluxes in the image's unit, positions in pixels
        th = h["TRUTH"].header  # nanomaggy is no FITS unit: written as the image's BUNIT names it
        assert [th[f"TUNIT{i}"] for i in (4, 5, 6, 7)] == ["nanomaggy"] * 4
        assert truth["x"].unit == "pix" and h["TRUTH"].header.comments["TTYPE6"] == "flux added to plane r"
    # PNG: the model's stretch and display rule, the same in strips of any height
    stretch = stretch_from_dict(sim.stretch)
    whole = to_rgb(np.clip(stretch.forward(sky.image), -1, 1), ["g", "r", "i"])
    np.testing.assert_array_equal(sky_rgb8(sky), whole)
    np.testing.assert_array_equal(sky_rgb8(sky, rows=7), whole)
    # an 8-bit model cannot be composed in flux
    with pytest.raises(ConfigError, match="dcgan_hdf32 is not flux-calibrated"):
        compose_mosaic(load_pretrained(checkpoints_dir() / "dcgan_hdf32.json"), height=32, width=32, flux=True,
                       progress=False)


def test_source_flux_finds_the_same_sources_in_any_flux_unit():
    """The mask's noise floor scales with the data: the sim model's galaxies in nanomaggies, in
    maggies (1e-9 of them) or in 1e6 nanomaggies keep the same pixels."""
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir
    from galaxy_core.sky.mosaic import FluxGalaxies
    from galaxy_core.sky.stamps import source_flux

    flux = FluxGalaxies(load_pretrained(checkpoints_dir() / "dcgan_sim64.json"))._flux(np.ones(8, np.int64), 5)
    kept = source_flux(flux)
    assert (kept != 0).sum() > 8 * 50  # every galaxy keeps its pixels
    for scale in (1e-9, 1e6):
        np.testing.assert_allclose(source_flux(flux * scale) / scale, kept, rtol=1e-5, atol=1e-6 * np.abs(kept).max())


def test_a_mosaic_never_overwrites_a_file_with_its_memory_mapped_sky(tmp_path):
    """``memmap`` to a new file holds the sky there; an existing file (here a model card) is
    refused and left as it was."""
    from galaxy_core.errors import ConfigError
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir
    from galaxy_core.sky.mosaic import compose_mosaic

    model = load_pretrained(checkpoints_dir() / "dcgan_hdf32.json")
    sky = compose_mosaic(model, height=64, width=64, density=1e-3, seed=2, background=QUIET, progress=False,
                         memmap=tmp_path / "sky.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "sky.npy"), sky.image)
    card = tmp_path / "victim.json"
    card.write_text('{"arch": "dcgan"}')
    with pytest.raises(ConfigError, match="victim.json: already exists"):
        compose_mosaic(model, height=64, width=64, progress=False, memmap=card)
    assert card.read_text() == '{"arch": "dcgan"}'
    with pytest.raises(ConfigError, match="density"):
        compose_mosaic(model, height=64, width=64, density=-1.0, progress=False)


def test_survey_band_galaxies_fill_the_sky_planes_reddest_first():
    """A g/r/i model's galaxies enter a composed sky in the display's plane order (i, r, g as
    R, G, B), the same images its samples show, not g in the R plane."""
    from galaxy_core.models.pretrained import load_pretrained
    from galaxy_core.paths import checkpoints_dir
    from galaxy_core.sky.compose import ModelGalaxies
    from galaxy_core.sky.stamps import galaxy_flux

    model = load_pretrained(checkpoints_dir() / "dcgan_sim64.json")
    stamps = ModelGalaxies(model)(np.ones(3, np.int64), np.random.default_rng(4))
    import torch

    z = model.family.sample_latents(model.model_cfg, 3, generator=torch.Generator().manual_seed(
        int(np.random.default_rng(4).integers(2**62))))
    np.testing.assert_allclose(stamps, galaxy_flux(model.generate(z)[:, ::-1]), atol=1e-6)


def test_placed_galaxies_re_grid_into_the_cells_asked_for_at_full_jitter():
    # jitter 0.5 spreads positions over the whole cell; each stamp goes to a whole pixel, which
    # had moved some centres (half-pixel ones for even stamp sides) across their cell's edge
    from galaxy_core.sky.grids import catalogue_to_grid

    rng = np.random.default_rng(5)
    for side in (15, 16):
        for seed in range(6):
            cells = (rng.random((8, 8)) < 0.5).astype(np.int64) * rng.integers(1, 4, (8, 8))
            sky = compose_sky(height=128, width=128, positions=FixedPositions(cells),
                              galaxies=lambda c, r: gaussian_galaxies(c, r, side=side), cell_px=16, jitter=0.5,
                              background=QUIET, seed=seed)
            t = sky.truth
            assert len(t) == int((cells > 0).sum())
            back = catalogue_to_grid(np.asarray(t["x"]), np.asarray(t["y"]), np.asarray(t["cls"]), grid=8, cell_px=16)
            np.testing.assert_array_equal(back, cells)
