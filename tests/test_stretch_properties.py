"""Property tests of the stretches between flux and model range (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from galaxy_core.io.stretch import AsinhStretch, minmax_normalise

PROPS = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def stretch_and_flux(draw):
    """A 1..3-band AsinhStretch and a flux stack (2, C, 4, 4) inside each band's [lo, hi]."""
    c = draw(st.integers(1, 3))
    soft, lo, hi = [], [], []
    for _ in range(c):
        s = draw(st.floats(1e-3, 1e3))
        low = draw(st.floats(-50.0, 10.0)) * s
        soft.append(s)
        lo.append(low)
        hi.append(low + draw(st.floats(0.5, 1e4)) * s)
    stretch = AsinhStretch(tuple(soft), tuple(lo), tuple(hi))
    u = draw(arrays(np.float64, (2, c, 4, 4), elements=st.floats(0.0, 1.0)))
    flux = np.asarray(lo).reshape(c, 1, 1) + u * (np.asarray(hi) - np.asarray(lo)).reshape(c, 1, 1)
    return stretch, flux


@PROPS
@given(case=stretch_and_flux())
def test_asinh_round_trip(case):
    stretch, flux = case
    y = stretch.forward(flux)
    assert y.dtype == np.float32 and y.shape == flux.shape
    assert np.all(y >= -1 - 1e-6) and np.all(y <= 1 + 1e-6)  # [lo, hi] maps into [-1, 1]
    back = stretch.inverse(y)
    # float32 model values carry ~6e-8 of the range [-1, 1]; through d flux / d u =
    # sqrt(s^2 + f^2) that is the flux error allowed here (with a factor 4 of margin).
    s = np.asarray(stretch.softening).reshape(-1, 1, 1)
    u_span = (np.arcsinh(np.asarray(stretch.hi) / np.asarray(stretch.softening))
              - np.arcsinh(np.asarray(stretch.lo) / np.asarray(stretch.softening))).reshape(-1, 1, 1)
    tol = 4 * 6e-8 * u_span / 2 * np.sqrt(s**2 + np.maximum(flux, back) ** 2) + 1e-12
    assert np.all(np.abs(back - flux) <= tol)


@PROPS
@given(case=stretch_and_flux())
def test_asinh_end_points_and_order(case):
    stretch, flux = case
    c = len(stretch.lo)
    ends = np.stack([np.asarray(stretch.lo), np.asarray(stretch.hi)])[:, :, None, None]  # (2, C, 1, 1)
    np.testing.assert_allclose(stretch.forward(ends)[:, :, 0, 0], [[-1] * c, [1] * c], atol=1e-6)
    y = stretch.forward(flux)
    for band in range(c):  # strictly increasing in flux, band by band
        f, v = flux[:, band].ravel(), y[:, band].ravel().astype(np.float64)
        idx = np.argsort(f, kind="stable")
        assert np.all(np.diff(v[idx]) >= -1e-7)


@PROPS
@given(flux=arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 3),
                                         st.integers(1, 6), st.integers(1, 6)),
                   elements=st.floats(-1e6, 1e6)))
def test_minmax_spans_minus_one_to_one_per_image(flux):
    y = minmax_normalise(flux)
    assert y.dtype == np.float32 and y.shape == flux.shape
    for img, out in zip(flux, y):
        if img.max() > img.min():
            assert out.min() == -1.0 and abs(float(out.max()) - 1.0) < 1e-6
        else:
            assert (out == -1).all()
