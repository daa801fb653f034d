"""The flux <-> model-range stretches of galaxy_core.io.stretch."""

from __future__ import annotations

import numpy as np
import pytest

from galaxy_core.io.stretch import (
    MINMAX_DESCRIPTION,
    AsinhStretch,
    minmax_normalise,
    stretch_from_dict,
)


def galaxy_flux(seed=0, n=4, size=48) -> np.ndarray:
    """(n, 3, size, size) float64: sky noise plus exponential discs of different brightness."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    r = np.hypot(xx, yy)
    flux = rng.normal(0.0, 0.05, (n, 3, size, size))
    for i in range(n):
        for c, colour in enumerate((0.6, 1.0, 1.3)):  # g, r, i: redder is brighter
            flux[i, c] += (i + 1) * colour * 20.0 * np.exp(-r / 1.5)
    return flux


def test_forward_maps_lo_and_hi_to_the_ends():
    s = AsinhStretch(softening=(1.0, 2.0), lo=(-0.5, 0.0), hi=(100.0, 50.0))
    flux = np.empty((2, 1, 2))
    flux[0] = [[-0.5, 100.0]]
    flux[1] = [[0.0, 50.0]]
    np.testing.assert_allclose(s.forward(flux), [[[-1, 1]], [[-1, 1]]], atol=1e-6)


def test_forward_hand_computed_midpoint():
    # u(f) = asinh(f / 1); with lo = 0, hi = sinh(2): u(lo) = 0, u(hi) = 2, so f = sinh(1)
    # sits at u = 1, halfway, i.e. y = 0.
    s = AsinhStretch(softening=(1.0,), lo=(0.0,), hi=(np.sinh(2.0),))
    y = s.forward(np.full((1, 1, 1), np.sinh(1.0)))
    assert y.dtype == np.float32
    assert abs(float(y[0, 0, 0])) < 1e-6


@pytest.mark.parametrize("shape", [(3, 48, 48), (4, 3, 48, 48)])
def test_round_trip_recovers_flux(shape):
    flux = galaxy_flux().reshape(-1, 3, 48, 48)[: shape[0] if len(shape) == 4 else 1]
    flux = flux.reshape(shape)
    s = AsinhStretch.fit(flux)
    back = s.inverse(s.forward(flux).astype(np.float64))
    # forward returns float32: relative error ~1e-7 of the asinh value, amplified by the
    # slope of sinh; 1e-5 of the largest flux bounds it comfortably.
    np.testing.assert_allclose(back, flux, rtol=1e-5, atol=1e-5 * np.abs(flux).max())


def test_fit_hand_computed_parameters():
    # One band whose values are 0..100 in steps of 1 (median 50, MAD 25).
    flux = np.arange(101, dtype=np.float64).reshape(1, 1, 1, 101)
    s = AsinhStretch.fit(flux, softening_sigmas=3.0, lo_sigmas=3.0, hi_percentile=99.0)
    sigma = 1.4826 * 25.0
    assert s.softening[0] == pytest.approx(3 * sigma)
    assert s.lo[0] == pytest.approx(50 - 3 * sigma)
    assert s.hi[0] == pytest.approx(max(99.0, 50 + 10 * sigma))


def test_fit_on_galaxies_is_per_band_and_orders_parameters():
    flux = galaxy_flux()
    s = AsinhStretch.fit(flux)
    assert len(s.softening) == len(s.lo) == len(s.hi) == 3
    for c in range(3):
        assert s.lo[c] < np.median(flux[:, c]) < s.hi[c]
        assert s.softening[c] == pytest.approx(3 * 0.05, rel=0.3)  # 3 x the sky noise
    assert s.hi[0] < s.hi[1] < s.hi[2]  # the redder bands are brighter
    y = s.forward(flux)
    assert np.mean(y > 1) <= 2e-4  # hi is the 99.99th percentile of each band
    assert np.mean(y < -1) < 0.01  # lo is 3 sigma below the sky


def test_fit_constant_band_does_not_divide_by_zero():
    s = AsinhStretch.fit(np.full((2, 1, 4, 4), 3.0))
    assert np.all(np.isfinite(s.forward(np.full((1, 4, 4), 3.0))))


def test_dict_round_trip():
    s = AsinhStretch(softening=(0.1, 0.2), lo=(-1.0, -2.0), hi=(10.0, 20.0))
    d = s.to_dict()
    assert d["type"] == "asinh" and d["flux_preserving"] is True
    assert stretch_from_dict(d) == s
    assert stretch_from_dict(None) is None
    assert stretch_from_dict(dict(MINMAX_DESCRIPTION)) is None
    with pytest.raises(ValueError, match="unknown stretch"):
        stretch_from_dict({"type": "log"})


def test_minmax_per_image_range():
    flux = galaxy_flux()
    y = minmax_normalise(flux)
    assert y.dtype == np.float32
    for i in range(len(flux)):
        assert y[i].min() == pytest.approx(-1.0) and y[i].max() == pytest.approx(1.0)
    # hand-computed: values 2, 4, 6 -> -1, 0, 1
    np.testing.assert_allclose(minmax_normalise(np.array([[[[2.0, 4.0, 6.0]]]])), [[[[-1, 0, 1]]]])
    assert (minmax_normalise(np.full((1, 1, 2, 2), 5.0)) == -1).all()
    assert MINMAX_DESCRIPTION["flux_preserving"] is False


def test_restretch_goes_through_flux_and_keeps_it():
    import json
    from pathlib import Path

    import torch

    from galaxy_core.io.stretch import restretch

    root = Path(__file__).resolve().parents[1] / "checkpoints"
    s64, s128 = (stretch_from_dict(json.loads((root / f"{n}.json").read_text())["data"]["stretch"])
                 for n in ("dcgan_sim64", "stackgan_sim128"))
    # g band, 0.2 nanomaggy in a 64 px pixel: stage I's code 0.020, and 0.05 per 128 px pixel
    # (the 2x2 pixels that share it) in stage II's stretch, 0.097 (the reviewer's figures)
    flux = np.zeros((1, 3, 1, 1))
    flux[0, 0] = 0.2
    x = torch.from_numpy(s64.forward(flux))
    assert float(x[0, 0]) == pytest.approx(0.020, abs=5e-4)
    y = restretch(x, source=s64, target=s128, flux_scale=0.25)
    assert float(y[0, 0]) == pytest.approx(0.097, abs=5e-4)
    # in general: the target stretch of the scaled flux, clipped as stored data are
    codes = torch.linspace(-1, 1, 9).repeat(3, 1).T.reshape(9, 3, 1, 1).float()
    want = np.clip(s128.forward(s64.inverse(codes.numpy()) * 0.25), -1, 1)
    np.testing.assert_allclose(restretch(codes, source=s64, target=s128, flux_scale=0.25).numpy(), want, atol=2e-5)
    np.testing.assert_allclose(restretch(codes, source=s64, target=s64).numpy(), codes.numpy(), atol=2e-5)
