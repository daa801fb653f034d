"""One flux convention: the same galaxy through ``sim`` and through a FITS folder gives the
same magnitudes, whatever size each source had (``galaxy_core.io.units``)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from galaxy_core.data import sim
from galaxy_core.data.folder import prepare_folder
from galaxy_core.io.fits import write_fits_cube
from galaxy_core.io.stretch import AsinhStretch
from galaxy_core.metrics.photometry import band_magnitudes

COUNT, SEED = 6, 4


def _flux(ds) -> np.ndarray:
    """(N, 3, R, R) nanomaggies: the prepared images turned back into flux."""
    return AsinhStretch.from_dict(ds.stretch).inverse(ds.to_model_range())


def _magnitudes(flux: np.ndarray) -> np.ndarray:
    """(N, 3) Kron magnitudes g, r, i (zero point 22.5, nanomaggies)."""
    rows = [band_magnitudes(f, zero_point=22.5) for f in flux]
    return np.array([[r["mag_g"], r["mag_r"], r["mag_i"]] for r in rows])


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The ``sim`` raw cube, and the same galaxies written as 128 px FITS files.

    Each 64 px stamp becomes a 128 px one by splitting every pixel into 2 x 2 pixels of a
    quarter of its flux: the total flux is exactly the same, the pixels half the size.
    """
    root = tmp_path_factory.mktemp("flux")
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GALAXYGAN_CACHE", str(cache))
        path = sim.build_sim(sim.raw_path(count=COUNT, seed=SEED), count=COUNT, seed=SEED,
                             progress=False)  # fmt: skip
    raw = fits.getdata(path, 0)  # (N, 3, 64, 64) nanomaggies
    folder = root / "fits"
    folder.mkdir()
    for i, stamp in enumerate(raw.astype(np.float64)):
        fine = stamp.repeat(2, axis=1).repeat(2, axis=2) / 4  # (3, 128, 128)
        write_fits_cube(folder / f"galaxy{i:02d}.fits", fine, bands=sim.BANDS,
                        bunit="nanomaggy", pixel_scale_arcsec=sim.PIXEL_SCALE / 2,
                        header_cards={"MAGZP": sim.ZERO_POINT})  # fmt: skip
    return cache, folder, raw


@pytest.mark.parametrize("resolution", [32, 64])
def test_sim_and_fits_folder_give_the_same_magnitudes(sources, resolution, monkeypatch):
    cache, folder, raw = sources
    monkeypatch.setenv("GALAXYGAN_CACHE", str(cache))
    opts = dict(resolution=resolution, crop=1.0, normalisation="asinh", progress=False)
    from_sim = sim.prepare_sim(count=COUNT, seed=SEED, rebuild=False, **opts)
    from_fits = prepare_folder(folder, rebuild=True, **opts)
    assert from_fits.manifest["zero_point"] == from_sim.manifest["zero_point"] == 22.5
    assert from_fits.manifest["pixel_scale_arcsec"] == pytest.approx(
        from_sim.manifest["pixel_scale_arcsec"])  # fmt: skip
    flux_sim, flux_fits = _flux(from_sim), _flux(from_fits)
    # Whole-stamp magnitudes: exactly what the convention governs. float16 storage of the
    # stretched values adds about 1e-3 relative per pixel.
    stamp_sim = 22.5 - 2.5 * np.log10(flux_sim.sum(axis=(2, 3)))
    stamp_fits = 22.5 - 2.5 * np.log10(flux_fits.sum(axis=(2, 3)))
    stamp_raw = 22.5 - 2.5 * np.log10(raw.astype(np.float64).sum(axis=(2, 3)))
    np.testing.assert_allclose(stamp_fits, stamp_sim, atol=0.01)
    np.testing.assert_allclose(stamp_sim, stamp_raw, atol=0.01)
    # Kron magnitudes of the galaxies: the same to a few hundredths (64 -> R and 128 -> R
    # resampling differ at the pixel level). Keeping surface brightness instead would put the
    # FITS folder 2.5 log10(4) = 1.5 mag fainter. Stamp 0 has a neighbour whose blend with
    # the galaxy, and so the Kron aperture, depends on the pixel grid: left out.
    m_sim, m_fits = _magnitudes(flux_sim[1:]), _magnitudes(flux_fits[1:])
    assert np.isfinite(m_sim).all() and np.isfinite(m_fits).all()
    np.testing.assert_allclose(m_fits, m_sim, atol=0.03)
