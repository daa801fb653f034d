"""Morphology validated on the built-in ``sim`` galaxies against their truth catalogue.

Tolerances: the truth is measured before seeing and the images are PSF-convolved with sky noise,
so measured ellipticities are slightly rounder and Kron apertures (2.5 Kron radii) miss a few
per cent of the light.
"""

from __future__ import annotations

import numpy as np
import pytest

from galaxy_core.data.sim import draw_galaxy, sample_params, truth_row
from galaxy_core.metrics.morphology import measure_fast


@pytest.fixture(scope="module")
def measured():
    rows = []
    for i in range(48):
        p = sample_params(0, i)
        image = draw_galaxy(p, size=64, noise=True, extras=False)  # (3, 64, 64) flux, isolated galaxy
        t = truth_row(p, size=64, frac_in_stamp=1.0)
        m = measure_fast(image[1])  # r band
        assert not m["failed"], m["reason"]
        rows.append((t["ellipticity"], m["ellipticity"], t["pa_deg"], m["orientation"], t["flux_r"],
                     m["kron_flux"], t["hlr_pix"], m["r_half"]))
    return np.array(rows, float)


def test_shape_matches_truth_for_resolved_elongated_galaxies(measured):
    e_true, e_meas, pa_true, pa_meas, *_ , hlr, _ = measured.T
    sel = (hlr > 3) & (e_true > 0.3)
    assert sel.sum() >= 15
    d_pa = (pa_meas - pa_true + 90) % 180 - 90  # orientation is defined modulo 180 degrees
    assert np.median(np.abs(e_meas[sel] - e_true[sel])) < 0.08
    assert np.median(np.abs(d_pa[sel])) < 5
    assert np.max(np.abs(d_pa[sel])) < 15


def test_flux_and_size_match_truth(measured):
    _, _, _, _, flux_true, kron, hlr, r_half = measured.T
    ratio = kron / flux_true
    assert 0.85 < np.median(ratio) < 1.0
    assert np.percentile(ratio, 5) > 0.7
    assert np.corrcoef(hlr, r_half)[0, 1] > 0.85
