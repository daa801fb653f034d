"""Crop/resize of prepared images and the batch augmentations of the training loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from galaxy_core.data.transforms import (
    Augment,
    centre_crop,
    centre_crop_box,
    random_flip,
    random_hue_shift,
    random_rot90,
    random_rotate,
    resize,
)
from galaxy_core.errors import ConfigError

LUMA = torch.tensor([0.299, 0.587, 0.114])


def batch(n=8, c=3, size=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1  # (N, C, H, W) in [-1, 1]


def gen(seed=1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def same_multiset(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.flatten().sort().values, b.flatten().sort().values)


# --------------------------------------------------------------------------- crop and resize


def test_centre_crop_square_and_fraction():
    img = np.arange(3 * 10 * 10).reshape(3, 10, 10)
    out = centre_crop(img, 0.5)
    # margin 10 * 0.5 / 2 = 2.5, a tie kept at 2 on every side: 6 px kept, centre unmoved
    assert out.shape == (3, 6, 6)
    np.testing.assert_array_equal(out, img[:, 2:8, 2:8])
    assert centre_crop_box((64, 64), 0.8) == (6, 6, 52)  # not 51: the centre stays at 31.5
    assert centre_crop_box((64, 64), 0.85) == (5, 5, 54)  # margin 4.8 -> 5
    assert centre_crop_box((64, 64), 0.01) == (31, 31, 2)  # at least 2 px of an even side
    assert centre_crop_box((9, 9), 0.01) == (4, 4, 1)


def test_centre_crop_keeps_a_centred_galaxy_centred():
    yy, xx = np.mgrid[0:64, 0:64]
    galaxy = np.exp(-((xx - 31.5) ** 2 + (yy - 31.5) ** 2) / 50.0)[None]
    for fraction in (0.8, 0.55, 0.3):
        cut = centre_crop(galaxy, fraction)[0]
        c = (cut.shape[-1] - 1) / 2
        iy, ix = np.indices(cut.shape)
        assert (cut * ix).sum() / cut.sum() == pytest.approx(c, abs=1e-9)
        assert (cut * iy).sum() / cut.sum() == pytest.approx(c, abs=1e-9)


def test_centre_crop_non_square_takes_central_square_first():
    img = np.zeros((1, 6, 10), np.uint8)
    img[:, :, 2:8] = 7  # the central 6x6 square
    full = centre_crop(img, 1.0)
    assert full.shape == (1, 6, 6)
    assert (full == 7).all()
    assert centre_crop(img, 0.5).shape == (1, 4, 4)  # margin 6 * 0.5 / 2 = 1.5, a tie: 1
    assert centre_crop_box((7, 10), 1.0) == (0, 1, 7)  # odd difference: extra column dropped right


def test_centre_crop_rejects_bad_fraction():
    with pytest.raises(ValueError, match="crop fraction"):
        centre_crop(np.zeros((1, 4, 4)), 0.0)
    with pytest.raises(ValueError, match="crop fraction"):
        centre_crop(np.zeros((1, 4, 4)), 1.5)


def test_resize_uint8_keeps_uniform_colour():
    img = np.empty((3, 424, 424), np.uint8)
    img[0], img[1], img[2] = 200, 90, 17
    out = resize(centre_crop(img, 0.6), 32)
    assert out.dtype == np.uint8 and out.shape == (3, 32, 32)
    np.testing.assert_array_equal(out[:, 5, 9], [200, 90, 17])
    assert (out[0] == 200).all() and (out[1] == 90).all() and (out[2] == 17).all()


def test_resize_float_keeps_total_flux():
    # The project's flux convention (galaxy_core.io.units): a smooth ramp shrunk 64 -> 16 keeps
    # its summed flux; each output pixel holds (64 / 16)**2 = 16 source pixels' worth.
    yy, xx = np.mgrid[0:64, 0:64]
    img = (1.0 + 0.01 * xx + 0.02 * yy).astype(np.float32)[None]
    out = resize(img, 16)
    assert out.dtype == np.float32 and out.shape == (1, 16, 16)
    assert out.sum() == pytest.approx(img.sum(), rel=1e-3)
    assert out.mean() == pytest.approx(16 * img.mean(), rel=1e-3)
    up = resize(img, 128)
    assert up.sum() == pytest.approx(img.sum(), rel=1e-3)


def test_resize_float_antialiases_checkerboard():
    # A pixel-scale checkerboard is pure aliasing when subsampled; antialiasing greys it out.
    img = ((np.indices((64, 64)).sum(0) % 2) * 2 - 1).astype(np.float32)[None]
    out = resize(img, 16)
    assert np.abs(out).max() < 0.1


# --------------------------------------------------------------------------- properties

PROPS = settings(max_examples=60, deadline=None, derandomize=True)


@PROPS
@given(h=st.integers(1, 90), w=st.integers(1, 90), fraction=st.floats(0.01, 1.0))
def test_centre_crop_box_properties(h, w, fraction):
    top, left, side = centre_crop_box((h, w), fraction)
    n = min(h, w)
    assert 1 <= side <= n and (n - side) % 2 == 0  # same parity: a symmetric margin
    assert top + side <= h and left + side <= w
    assert top - (h - n) // 2 == left - (w - n) // 2 == (n - side) // 2  # centred in the square
    if side > 2:  # nearest side of that parity, unless the 1-2 px floor applies
        assert abs(side - fraction * n) <= 1 + 1e-9
    assert centre_crop_box((h, w), 1.0) == ((h - n) // 2, (w - n) // 2, n)


@PROPS
@given(side=st.integers(4, 48), size=st.integers(2, 64), level=st.floats(0.01, 1e4),
       cx=st.floats(-0.1, 0.1), cy=st.floats(-0.1, 0.1), sigma=st.floats(0.06, 0.12))
def test_resize_keeps_total_flux_and_positivity(side, size, level, cx, cy, sigma):
    flat = np.full((1, side, side), level, np.float32)
    np.testing.assert_allclose(resize(flat, size).sum(), flat.sum(), rtol=1e-5)
    # a smooth galaxy well inside the stamp (sigma 6-12 % of the side, centre within 10 %)
    y, x = (np.mgrid[:side, :side] + 0.5) / side - 0.5
    galaxy = level * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))[None]
    out = resize(galaxy.astype(np.float32), size)
    assert out.shape == (1, size, size) and out.min() >= 0
    if size >= 8 and side >= 8:  # sampled finely enough for the flux to be defined
        assert out.sum() == pytest.approx(galaxy.sum(), rel=0.02)


@PROPS
@given(a=st.floats(-5, 5), b=st.floats(-5, 5), size=st.integers(3, 40))
def test_resize_is_linear(a, b, size):
    rng = np.random.default_rng(0)
    x, z = rng.normal(size=(2, 1, 24, 24))
    lhs = resize((a * x + b * z).astype(np.float32), size)
    rhs = a * resize(x.astype(np.float32), size) + b * resize(z.astype(np.float32), size)
    np.testing.assert_allclose(lhs, rhs, atol=1e-4 * (abs(a) + abs(b) + 1))


# --------------------------------------------------------------------------- flips, quarter turns


def test_random_flip_is_per_image_permutation():
    x = batch()
    y = random_flip(x, gen())
    for i in range(len(x)):
        options = [x[i], x[i].flip(-1), x[i].flip(-2), x[i].flip(-1).flip(-2)]
        assert any(torch.equal(y[i], o) for o in options)
        assert same_multiset(y[i], x[i])


def test_random_flip_horizontal_only():
    x = batch(n=16)
    y = random_flip(x, gen(), vertical=False)
    for i in range(len(x)):
        assert torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(-1))
    assert not torch.equal(y, x)  # with 16 images some are flipped


def test_random_rot90_is_an_exact_quarter_turn():
    x = batch(n=32)
    y = random_rot90(x, gen())
    ks = []
    for i in range(len(x)):
        matches = [k for k in range(4) if torch.equal(y[i], torch.rot90(x[i], k, (-2, -1)))]
        assert matches, f"image {i} is not a rotation of its input"
        ks.append(matches[0])
        assert same_multiset(y[i], x[i])
    assert set(ks) == {0, 1, 2, 3}  # all four turns are drawn


def test_random_rot90_needs_square():
    with pytest.raises(ValueError, match="square"):
        random_rot90(torch.zeros(1, 1, 4, 6), gen())


def test_augmentations_are_deterministic_for_a_seed():
    x = batch()
    aug = Augment(rotate="any", hue_p=0.5)
    a = aug(x, gen(5))
    b = aug(x, gen(5))
    c = aug(x, gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# --------------------------------------------------------------------------- resampled rotation


@pytest.mark.parametrize("fill", ["reflect", "constant"])
def test_random_rotate_by_90_matches_rot90(fill):
    x = batch()
    y = random_rotate(x, gen(), angles=[90], fill=fill)
    # 90 degrees maps pixel centres onto pixel centres, so bilinear sampling is exact
    # to rounding; check the interior (away from the border) strictly.
    expected = torch.rot90(x, 1, (-2, -1))
    torch.testing.assert_close(y[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2], atol=1e-5, rtol=0)


def test_random_rotate_zero_is_identity():
    x = batch()
    torch.testing.assert_close(random_rotate(x, gen(), angles=[0.0]), x, atol=1e-5, rtol=0)


def test_random_rotate_45_constant_fill_puts_background_in_corners():
    x = torch.ones(2, 1, 32, 32) * 0.5
    y = random_rotate(x, gen(), angles=[45], fill="constant")
    for r, c in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        torch.testing.assert_close(y[:, 0, r, c], torch.full((2,), -1.0))
    torch.testing.assert_close(y[:, 0, 16, 16], torch.full((2,), 0.5))  # centre untouched


def test_random_rotate_45_reflect_fill_has_no_background():
    x = torch.ones(2, 1, 32, 32) * 0.5
    y = random_rotate(x, gen(), angles=[45], fill="reflect")
    torch.testing.assert_close(y, x)


def test_random_rotate_step_draws_multiples():
    # A bright pixel 12 px right of the centre lands on one of 4 positions for 90-degree
    # steps (counter-clockwise as displayed: right -> top -> left -> bottom).
    x = torch.full((64, 1, 33, 33), -1.0)
    x[:, 0, 16, 28] = 1.0
    y = random_rotate(x, gen(), step_degrees=90)
    positions = {tuple(divmod(int(v), 33)) for v in y[:, 0].flatten(1).argmax(1)}
    assert positions == {(16, 28), (4, 16), (16, 4), (28, 16)}


# --------------------------------------------------------------------------- hue


def test_hue_shift_keeps_luma():
    x = batch(n=8) * 0.3  # inside the gamut, so no clipping
    y = random_hue_shift(x, gen(), p=1.0, max_shift=40.0)
    luma_x = torch.einsum("c,nchw->nhw", LUMA, x)
    luma_y = torch.einsum("c,nchw->nhw", LUMA, y)
    torch.testing.assert_close(luma_y, luma_x, atol=1e-5, rtol=0)
    assert not torch.allclose(y, x)


def test_hue_shift_keeps_grey_and_respects_p():
    grey = torch.full((4, 3, 8, 8), 0.2)
    torch.testing.assert_close(random_hue_shift(grey, gen(), p=1.0, max_shift=90), grey)
    x = batch()
    assert torch.equal(random_hue_shift(x, gen(), p=0.0), x)


def test_hue_shift_of_zero_degrees_is_identity():
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1) * 0.5
    torch.testing.assert_close(random_hue_shift(red, gen(), p=1.0, max_shift=0.0), red)


@pytest.mark.parametrize("c", [1, 4])
def test_hue_shift_refuses_non_rgb(c):
    with pytest.raises(ValueError, match="R, G, B"):
        random_hue_shift(torch.zeros(2, c, 4, 4), gen())


def test_hue_shift_refuses_physical_bands():
    with pytest.raises(ValueError, match="meaningless"):
        random_hue_shift(torch.zeros(2, 3, 4, 4), gen(), channels=["g", "r", "i"])


# --------------------------------------------------------------------------- config


def test_augment_round_trip_and_defaults():
    aug = Augment.from_dict({"rotate": "45", "rotate_fill": "constant", "hue_p": 0.25})
    assert Augment.from_dict(aug.to_dict()) == aug
    assert Augment.from_dict(None) == Augment()
    assert Augment.from_dict({"rotate": 45}).rotate == "45"


def test_augment_unknown_key_names_it():
    with pytest.raises(ConfigError, match="'flip_x'"):
        Augment.from_dict({"flip_x": True})


@pytest.mark.parametrize(
    "bad", [{"rotate": "30"}, {"rotate_fill": "wrap"}, {"hue_p": 2.0}, {"flip_h": "yes"}]
)
def test_augment_bad_values(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        Augment.from_dict(bad)


def test_augment_check_channels():
    Augment(hue_p=0.5).check_channels(["R", "G", "B"])
    Augment().check_channels(["g", "r", "i"])
    with pytest.raises(ConfigError, match="hue_p"):
        Augment(hue_p=0.5).check_channels(["g", "r", "i"])


def test_augment_keeps_shape_and_range():
    x = batch(n=4, size=32)
    y = Augment(rotate="any", rotate_fill="constant", hue_p=1.0)(x, gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= -1.0 and y.max() <= 1.0
