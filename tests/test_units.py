"""The flux convention of resampling and the 8-bit <-> model-range conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galaxy_core.io.units import (
    model_to_float16,
    model_to_uint8,
    pixel_area_ratio,
    resample_flux,
    same_unit,
    uint8_to_model,
)


def _gaussian(size: int, sigma: float, flux: float = 100.0) -> np.ndarray:
    """(size, size) circular Gaussian of total ``flux`` centred on the image centre."""
    c = (size - 1) / 2
    y, x = np.mgrid[:size, :size]
    g = np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma**2))
    return flux * g / g.sum()


def test_constant_image_total_flux_is_exact():
    img = np.full((2, 64, 64), 3.0)
    small = resample_flux(img, 16)
    assert small.shape == (2, 16, 16) and small.dtype == np.float64
    np.testing.assert_allclose(small, 3.0 * 16)  # each output pixel covers 4 x 4 source pixels
    big = resample_flux(img, 128)
    np.testing.assert_allclose(big, 3.0 / 4)
    assert pixel_area_ratio((64, 64), 16) == 16.0 and pixel_area_ratio((48, 64), 32) == 3.0


@pytest.mark.parametrize("side, size", [(64, 32), (64, 128), (96, 64), (64, 45)])
def test_galaxy_total_flux_is_kept(side, size):
    img = _gaussian(side, sigma=side / 12)
    out = resample_flux(img[None], size)[0]
    assert out.sum() == pytest.approx(100.0, rel=5e-3)
    assert out.min() >= 0  # bilinear: no ringing


@pytest.mark.parametrize("shape, size", [((5, 3, 64, 64), 128), ((5, 3, 64, 64), 32), ((4, 3, 50, 70), 40),
                                         ((2, 424, 424), 64), ((48, 64), 100), ((3, 1, 20, 12), 16)])
def test_resample_is_scikit_image_resize_times_the_area_ratio(shape, size):
    """The per-axis matrices give scikit-image's own resize of the whole array (enlarging,
    shrinking with its anti-aliasing filter, non-square input stretched, any leading axes)."""
    from skimage.transform import resize

    x = np.random.default_rng(0).lognormal(size=shape)
    h, w = shape[-2:]
    expected = resize(x, shape[:-2] + (size, size), order=1, mode="reflect", anti_aliasing=h > size or w > size,
                      preserve_range=True) * pixel_area_ratio((h, w), size)
    out = resample_flux(x, size)
    assert out.shape == expected.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


def test_same_size_is_a_copy_and_bad_sizes_are_refused():
    img = _gaussian(8, 2.0)
    out = resample_flux(img, 8)
    np.testing.assert_array_equal(out, img)
    assert out is not img
    with pytest.raises(ValueError, match="at least 1 pixel"):
        resample_flux(img, 0)
    with pytest.raises(ValueError, match=r"\(\.\.\., H, W\)"):
        resample_flux(np.ones(5), 4)


def test_uint8_round_trip_every_value():
    x = np.arange(256, dtype=np.uint8)
    y = uint8_to_model(x)
    assert y.dtype == np.float32 and y[0] == -1.0 and y[255] == 1.0
    assert y[128] == pytest.approx(128 / 127.5 - 1, abs=1e-6)  # float32
    np.testing.assert_array_equal(model_to_uint8(y), x)


def test_torch_tensors_keep_their_type():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    y = uint8_to_model(x)
    assert y.dtype == torch.float32 and float(y.min()) == -1.0 and float(y.max()) == 1.0
    assert torch.equal(model_to_uint8(y), x)
    np.testing.assert_array_equal(y.numpy(), uint8_to_model(x.numpy()))


def test_out_of_range_model_values_are_clipped():
    y = np.array([-3.0, -1.0, -0.999, 0.0, 0.999, 1.0, 7.0])
    np.testing.assert_array_equal(model_to_uint8(y), [0, 0, 0, 128, 255, 255, 255])
    h = model_to_float16(y)
    assert h.dtype == np.float16 and h.min() == -1 and h.max() == 1


@pytest.mark.parametrize("a, b, same", [
    ("nanomaggy", "nanomaggy", True),
    ("nanomaggy", "nmgy", True),           # astropy's own name for it
    ("nanomaggies", "nanomaggy", True),    # a plural astropy does not read
    ("counts", "count", True),
    ("count", "nanomaggy", False),
    ("uJy", "nanomaggy", False),           # convertible (x 3.631) but other pixel values
    ("electron/s", "count", False),
    ("MyUnit", " myunit ", True),          # unreadable: compared as written, ignoring case
    ("MyUnit", "nanomaggy", False),
])
def test_same_unit(a, b, same):
    assert same_unit(a, b) is same and same_unit(b, a) is same
