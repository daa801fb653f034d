"""Tests for galaxy_core.data.sim: determinism, file format, truth against pixels, preparation."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galaxy_core.data import load_dataset, sim
from galaxy_core.errors import DataError
from galaxy_core.io.stretch import AsinhStretch

SEED = 5
COUNT = 12


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small noisy build in this process: (path, cube, truth, header)."""
    path = sim.build_sim(tmp_path_factory.mktemp("sim") / "a.fits", count=COUNT, seed=SEED, workers=1,
                         progress=False)  # fmt: skip
    with fits.open(path) as hdul:
        return path, np.array(hdul[0].data, np.float32), Table.read(hdul["TRUTH"]), hdul[0].header.copy()


def _moments(img: np.ndarray) -> np.ndarray:
    """Unweighted second moments (xx, yy, xy) in pixels^2; x = column, y = row."""
    y, x = np.indices(img.shape)
    f = img.sum()
    xc, yc = (img * x).sum() / f, (img * y).sum() / f
    return np.array([(img * (x - xc) ** 2).sum(), (img * (y - yc) ** 2).sum(), (img * (x - xc) * (y - yc)).sum()]) / f


def _shape(m: np.ndarray) -> tuple[float, float]:
    """(1 - b/a, position angle in degrees CCW from +x) from second moments."""
    xx, yy, xy = m
    half, det = (xx + yy) / 2, np.hypot((xx - yy) / 2, xy)
    return 1 - np.sqrt((half - det) / (half + det)), np.degrees(0.5 * np.arctan2(2 * xy, xx - yy)) % 180


def test_file_layout(built):
    path, cube, truth, header = built
    assert cube.shape == (COUNT, 3, 64, 64)
    assert header["BUNIT"] == "nanomaggy" and header["BANDS"] == "g,r,i"
    assert header["PIXSCALE"] == pytest.approx(0.396) and header["ZP"] == 22.5
    assert (header["SEED"], header["COUNT"], header["SIMVER"]) == (SEED, COUNT, sim.VERSION)
    assert truth.colnames == list(sim.TRUTH_COLUMNS)
    assert list(truth["id"]) == list(range(COUNT))
    assert truth.meta["ZP"] == 22.5 and truth.meta["FLUXUNIT"] == "nanomaggy"
    assert str(truth["hlr_arcsec"].unit) == "arcsec" and str(truth["pa_deg"].unit) == "deg"
    np.testing.assert_allclose(truth["mag_r"], 22.5 - 2.5 * np.log10(truth["flux_r"]))
    np.testing.assert_allclose(truth["hlr_pix"], truth["hlr_arcsec"] / 0.396)
    assert set(truth["population"]) <= {"red", "blue"}
    assert np.all((truth["mag_r"] >= 14) & (truth["mag_r"] <= 17.77))


def test_deterministic_whatever_the_workers_or_chunks(built):
    path, cube, truth, _ = built
    two = sim.build_sim(path.with_name("b.fits"), count=COUNT, seed=SEED, workers=2, progress=False)
    prefix = sim.build_sim(path.with_name("c.fits"), count=5, seed=SEED, workers=1, progress=False)
    np.testing.assert_array_equal(fits.getdata(two, 0), cube)
    np.testing.assert_array_equal(fits.getdata(prefix, 0), cube[:5])
    # draw_galaxy with the stamp's own noise stream reproduces the built pixels
    np.testing.assert_array_equal(sim.draw_galaxy(sim.sample_params(SEED, 7)), cube[7])
    assert sim.sample_params(SEED, 3) == sim.sample_params(SEED, 3)
    assert sim.sample_params(SEED + 1, 3) != sim.sample_params(SEED, 3)


def test_noise_level_matches_sky(built):
    _, cube, truth, _ = built
    corner = cube[:, :, :8, :8].reshape(COUNT, 3, -1)  # mostly empty sky
    sigma = np.median(corner.std(axis=-1), axis=0)
    expected = np.sqrt(np.median([truth[f"sky_{b}"] for b in "gri"], axis=1) / np.array(sim.ELECTRONS_PER_NMGY))
    np.testing.assert_allclose(sigma, expected, rtol=0.25)


def test_catalogue_flux_is_the_drawn_flux():
    for index in range(16):
        params = sim.sample_params(0, index)
        flux = np.array(params.galaxy.flux)
        big = sim.draw_galaxy(params, size=192, noise=False, extras=False).sum(axis=(1, 2))
        np.testing.assert_allclose(big, flux, rtol=0.01)
        if params.galaxy.hlr < 2.0:  # compact: nearly all light inside the 64 px stamp
            stamp = sim.draw_galaxy(params, noise=False, extras=False).sum(axis=(1, 2))
            np.testing.assert_allclose(stamp, flux, rtol=0.03)


def test_noiseless_build_records_flux_inside_stamp(tmp_path):
    path = sim.build_sim(tmp_path / "n.fits", count=6, seed=1, workers=1, progress=False, noiseless=True)
    cube, truth = fits.getdata(path, 0), Table.read(path, hdu="TRUTH")
    assert fits.getheader(path)["NOISELES"]
    for k, row in enumerate(truth):
        if not row["has_neighbour"] and row["n_stars"] == 0:
            assert cube[k, 1].sum() / row["flux_r"] == pytest.approx(row["frac_in_stamp"], rel=1e-4)
    assert np.all(truth["frac_in_stamp"] > 0.85)


def test_shape_truth_matches_image_moments():
    chosen = []
    for index in range(400):
        p = sim.sample_params(0, index)
        g = p.galaxy
        if g.bulge_frac[1] < 0.3 and g.ellipticity > 0.45 and g.hlr > 1.8:
            chosen.append(p)
        if len(chosen) == 5:
            break
    assert len(chosen) == 5
    for p in chosen:
        image = sim.draw_galaxy(p, noise=False, extras=False)[1]
        e, pa = _shape(_moments(image) - _moments(sim.draw_psf(p)[1]))  # moments add under convolution
        assert e == pytest.approx(p.galaxy.ellipticity, abs=0.08)
        assert abs((pa - p.galaxy.pa + 90) % 180 - 90) < 5


def test_population_statistics():
    gals = [sim.sample_params(0, i).galaxy for i in range(400)]
    red = np.array([g.population == "red" for g in gals])
    gr = np.array([g.mag[0] - g.mag[1] for g in gals])
    bt = np.array([g.bulge_frac[1] for g in gals])
    z = np.array([g.redshift for g in gals])
    assert 0.35 < red.mean() < 0.75
    assert gr[red].mean() - gr[~red].mean() > 0.25
    assert bt[red].mean() > 0.5 > bt[~red].mean()
    assert 0.07 < np.median(z) < 0.13
    assert all(g.n_knots == 0 for g in np.array(gals)[red])


def test_prepare_sim_stretch_inverts_and_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXYGAN_CACHE", str(tmp_path))
    opts = dict(crop=1.0, count=16, seed=2, rebuild=False, progress=False)
    ds = sim.prepare_sim(resolution=64, normalisation="asinh", **opts)
    raw = tmp_path / "sim" / "sim-16-seed2-64px.fits"
    assert raw.exists() and ds.root.parent == tmp_path / "prepared"
    assert ds.images.shape == (16, 3, 64, 64) and ds.images.dtype == np.float16
    assert ds.physical and ds.channels == ["g", "r", "i"] and len(ds.catalog) == 16
    assert ds.manifest["zero_point"] == 22.5 and ds.manifest["pixel_scale_arcsec"] == pytest.approx(0.396)
    x = ds.to_model_range()
    assert x.min() >= -1 and x.max() <= 1
    stretch = AsinhStretch.from_dict(ds.stretch)
    flux = np.clip(fits.getdata(raw, 0).astype(np.float64), np.reshape(stretch.lo, (3, 1, 1)),
                   np.reshape(stretch.hi, (3, 1, 1)))  # fmt: skip
    soft = np.reshape(stretch.softening, (3, 1, 1))
    assert np.all(np.abs(stretch.inverse(x) - flux) <= 4e-3 * np.abs(flux) + 2e-2 * soft)

    stamp = (raw.stat().st_mtime_ns, (ds.root / "images.npy").stat().st_mtime_ns)
    again = load_dataset("sim", count=16, seed=2, progress=False)  # through the public entry point
    assert again.root == ds.root
    assert (raw.stat().st_mtime_ns, (again.root / "images.npy").stat().st_mtime_ns) == stamp

    small = sim.prepare_sim(resolution=32, normalisation="asinh", **opts)  # same raw, resized
    assert raw.stat().st_mtime_ns == stamp[0] and small.images.shape == (16, 3, 32, 32)
    assert small.manifest["pixel_scale_arcsec"] == pytest.approx(0.792)
    total = AsinhStretch.from_dict(small.stretch).inverse(small.to_model_range())[:, 1].sum(axis=(1, 2))
    np.testing.assert_allclose(np.median(total / flux[:, 1].sum(axis=(1, 2))), 1.0, atol=0.03)
    assert small.catalog["hlr_pix"][0] == pytest.approx(ds.catalog["hlr_pix"][0] / 2)

    mm = sim.prepare_sim(resolution=64, normalisation="minmax", **opts)
    assert mm.stretch["type"] == "minmax" and mm.stretch["flux_preserving"] is False
    assert mm.root != ds.root


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(resolution=48),
        dict(crop=0.0),
        dict(crop=1.5),
        dict(normalisation="log"),
        dict(count=0),
        dict(seed=-1),
        dict(count=2.5),
    ],
)
def test_bad_prepare_options(kwargs):
    opts = dict(resolution=64, crop=1.0, count=16, seed=0, normalisation="asinh", rebuild=False, progress=False)
    with pytest.raises(DataError, match="sim:"):
        sim.prepare_sim(**{**opts, **kwargs})


@pytest.mark.parametrize("kwargs", [dict(count=0), dict(size=63), dict(size=8), dict(workers=0), dict(seed="1")])
def test_bad_build_options(tmp_path, kwargs):
    with pytest.raises(DataError, match="sim:"):
        sim.build_sim(tmp_path / "x.fits", progress=False, **kwargs)
    assert not (tmp_path / "x.fits").exists()
