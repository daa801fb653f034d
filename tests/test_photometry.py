"""Photometry: magnitudes of known-flux images, colours, absolute magnitudes, CMD box."""

from __future__ import annotations

import numpy as np
import pytest

from galaxy_core.metrics.morphology import MeasurementError
from galaxy_core.metrics.photometry import (
    CMDBox,
    absolute_magnitude,
    absolute_magnitude_hubble,
    acceptance_box,
    band_fluxes,
    band_magnitudes,
    colour,
    distance_modulus,
    flux_to_magnitude,
    fraction_in_box,
    hubble_distance_pc,
)

ZP = 22.5  # SDSS nanomaggies


def _gaussian_cube(fluxes, *, size=64, sigma=3.0, noise=0.0005, sky=0.0, seed=0):
    """(C, H, W) circular Gaussians of the given total fluxes, plus sky and noise."""
    y, x = np.mgrid[:size, :size]
    c = (size - 1) / 2
    unit = np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma**2))
    unit /= unit.sum()
    rng = np.random.default_rng(seed)
    return np.stack([f * unit + sky + rng.normal(0, noise, unit.shape) for f in fluxes])


def test_flux_to_magnitude():
    assert flux_to_magnitude(1.0, zero_point=ZP) == pytest.approx(22.5)
    assert flux_to_magnitude(100.0, zero_point=ZP) == pytest.approx(17.5)
    m = flux_to_magnitude(np.array([10.0, 0.0, -1.0]), zero_point=ZP)
    assert m[0] == pytest.approx(20.0) and np.isnan(m[1]) and np.isnan(m[2])


@pytest.mark.parametrize("aperture, tol", [("kron", 0.02), ("segment", 0.05)])
def test_band_magnitudes_of_known_flux(aperture, tol):
    fluxes = (50.0, 100.0, 200.0)  # g, r, i
    cube = _gaussian_cube(fluxes, sky=0.01)  # sky level is subtracted from the border
    mags = band_magnitudes(cube, zero_point=ZP, aperture=aperture)
    assert list(mags) == ["mag_g", "flux_g", "mag_r", "flux_r", "mag_i", "flux_i"]
    for band, f in zip("gri", fluxes):
        assert mags[f"mag_{band}"] == pytest.approx(ZP - 2.5 * np.log10(f), abs=tol)
    # the same aperture in every band: the colour is exact whatever the aperture loss
    gr = colour(mags["mag_g"], mags["mag_r"])
    assert gr == pytest.approx(-2.5 * np.log10(50.0 / 100.0), abs=2e-3)


def test_band_magnitudes_per_band_zero_points_and_names():
    cube = _gaussian_cube((100.0, 100.0))
    mags = band_magnitudes(cube, zero_point=[20.0, 25.0], bands=["u", "z"])
    assert mags["mag_z"] - mags["mag_u"] == pytest.approx(5.0, abs=1e-3)


def test_band_fluxes_of_empty_image_raise():
    with pytest.raises(MeasurementError, match="no source"):
        band_fluxes(np.random.default_rng(1).normal(0, 1, (3, 64, 64)))


def test_hubble_law_matches_astropy_at_low_redshift():
    z = np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    m = 17.0
    exact = absolute_magnitude(m, z)  # flat LCDM, H0=70, Om0=0.3
    first = absolute_magnitude_hubble(m, z)
    second = absolute_magnitude_hubble(m, z, second_order=True)
    # c/H0 = 4.28e9 pc: the thesis' printed 4.28e8 would be off by exactly 5 mag
    assert hubble_distance_pc(1.0) == pytest.approx(4.2827e9, rel=1e-4)
    assert np.all(np.abs(second - exact) < 0.005)
    assert np.all(np.abs(first - exact)[z <= 0.03] < 0.05)
    # the first-order law puts galaxies too near, so M too faint, by ~5 log10(1 + 0.775 z)
    assert np.allclose(first - exact, 5 * np.log10(1 + 0.775 * z), atol=0.005)
    thesis_typo = m - 5 * np.log10(4.28e8 * z) + 5
    assert np.allclose(thesis_typo - first, 5.0, atol=0.002)
    # by hand: D_C = (c/H0) * 0.05 / E(0.025) = 211.7 Mpc, D_L = 1.05 D_C = 222.3 Mpc
    assert distance_modulus(0.05) == pytest.approx(36.735, abs=0.005)


def test_acceptance_box_and_fraction_by_hand():
    real_Mr = [-21.0, -20.0, -19.0]  # median -20, std (ddof=1) 1
    real_gr = [0.4, 0.6, 0.8]  # median 0.6, std 0.2
    box = acceptance_box(real_Mr, real_gr)
    assert box == CMDBox(
        pytest.approx(-21.75), pytest.approx(-18.25), pytest.approx(0.25), pytest.approx(0.95)
    )
    Mr = np.array([-20.0, -21.7, -21.8, -19.0, -18.0, -20.0, -20.0, np.nan])
    gr = np.array([0.6, 0.3, 0.6, 0.9, 0.6, 0.2, 1.0, 0.6])
    # inside: 1st, 2nd, 4th; outside: Mr too bright, too faint, gr too blue, too red, NaN
    assert fraction_in_box(Mr, gr, box) == pytest.approx(3 / 8)
    wide = acceptance_box(real_Mr, real_gr, nsigma=10)
    assert fraction_in_box(Mr, gr, wide) == pytest.approx(7 / 8)
