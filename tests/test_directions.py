"""GANSpace directions in a StyleGAN's w (galaxy_core.explore.directions), the style path of the
interpolation, and the projection's chi^2 term and targets (galaxy_core.explore.projection)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galaxy_core.errors import DataError
from galaxy_core.explore import projection, style
from galaxy_core.explore.directions import edit_grid, edit_ws, latent_pca, w_pca
from galaxy_core.explore.interpolate import styles_path
from galaxy_core.io.stretch import AsinhStretch
from galaxy_core.models.stylegan import Generator, StyleGANConfig


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    cfg = StyleGANConfig(resolution=32, num_bands=3, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256,
                         channel_max=32)
    return Generator(cfg).eval()


@pytest.fixture(scope="module")
def d(G):
    return w_pca(G, n=3000, k=6, seed=1)


def test_w_pca_components_are_orthonormal_and_ordered(G, d):
    assert d.source == "w" and d.vectors.shape == (6, 16) and d.vectors.dtype == np.float32
    np.testing.assert_allclose(d.vectors @ d.vectors.T, np.eye(6), atol=1e-5)
    assert np.all(np.diff(d.explained) <= 1e-7) and 0 < d.explained.sum() <= 1
    assert np.all(np.diff(d.std) <= 1e-6) and np.all(d.std > 0)
    # the spread along each axis is that of the mapped w themselves (independent sample)
    w = style.mapping(G, np.random.default_rng(2).normal(size=(3000, 16)))
    proj_std = ((w - w.mean(0)) @ d.vectors.T).std(axis=0)
    np.testing.assert_allclose(proj_std, d.std, rtol=0.1)
    # the mapping makes w anisotropic: the first component explains more than an isotropic cloud would
    assert d.explained[0] > 1.5 / 16


def test_w_pca_is_reproducible_and_checks_its_arguments(G, d):
    again = w_pca(G, n=3000, k=6, seed=1)
    np.testing.assert_array_equal(again.vectors, d.vectors)
    with pytest.raises(ValueError, match="k <= w_dim"):
        w_pca(G, n=100, k=17)


def test_edit_ws_moves_only_the_chosen_layers(G, d):
    ws0 = style.w_plus(style.mapping(G, np.random.default_rng(3).normal(size=(1, 16))), G.num_ws)[0]
    mask = style.layer_mask(G, "middle")
    assert 0 < mask.sum() < G.num_ws
    out = edit_ws(ws0, d, [2.0, 0, -1.0], mask=mask)
    np.testing.assert_array_equal(out[~mask], ws0[~mask])  # bit-identical elsewhere
    step = 2.0 * d.std[0] * d.vectors[0] - 1.0 * d.std[2] * d.vectors[2]
    np.testing.assert_allclose(out[mask] - ws0[mask], np.broadcast_to(step, (mask.sum(), 16)), atol=1e-5)
    np.testing.assert_array_equal(edit_ws(ws0, d, np.zeros(6), mask=mask), ws0)  # strength 0: no change
    # the image changes, and the styles reaching unchosen layers do not
    imgs = style.synthesize(G, np.stack([ws0, out]))
    assert np.abs(imgs[1] - imgs[0]).max() > 1e-3
    with pytest.raises(ValueError, match="does not fit"):
        edit_ws(ws0, d, [1.0], mask=mask[:-1])
    with pytest.raises(ValueError, match="in w"):
        edit_ws(ws0, latent_pca(np.random.default_rng(0).normal(size=(50, 16)), k=2), [1.0], mask=mask)


def test_edit_grid_rows_follow_components(G, d):
    ws0 = style.w_plus(style.mapping(G, np.random.default_rng(4).normal(size=(1, 16))), G.num_ws)[0]
    mask = style.layer_mask(G, "coarse")
    grid = edit_grid(ws0, d, mask=mask, components=[0, 3], steps=5, span=2.0)
    assert grid.shape == (10, G.num_ws, 16)
    np.testing.assert_allclose(grid[2], ws0, atol=1e-6)  # middle column: the start
    delta = grid[9, mask][0] - ws0[mask][0]  # last column of the PC-4 row: +2 std along it
    np.testing.assert_allclose(delta, 2.0 * d.std[3] * d.vectors[3], atol=1e-5)
    assert all(np.array_equal(g[~mask], ws0[~mask]) for g in grid)


def test_styles_path_is_linear_per_layer():
    keys = np.random.default_rng(5).normal(size=(2, 4, 3)).astype(np.float32)
    path = styles_path(keys, 5)
    assert path.shape == (5, 4, 3)
    np.testing.assert_allclose(path[0], keys[0], atol=1e-6)
    np.testing.assert_allclose(path[-1], keys[1], atol=1e-6)
    np.testing.assert_allclose(path[2], keys.mean(0), atol=1e-6)


def test_torch_inverse_stretch_matches_the_numpy_one():
    st = AsinhStretch(softening=(0.1, 0.2), lo=(-0.3, -0.5), hi=(10.0, 20.0))
    y = np.random.default_rng(6).uniform(-1, 1, size=(2, 2, 5, 5)).astype(np.float32)
    inv = projection.torch_inverse_stretch(st.to_dict())
    np.testing.assert_allclose(inv(torch.from_numpy(y)).numpy(), st.inverse(y), rtol=1e-5, atol=1e-6)
    assert projection.torch_inverse_stretch(None) is None


def test_noise_sigma_reads_the_outer_ring():
    rng = np.random.default_rng(7)
    flux = rng.normal(0, [[[0.5]], [[2.0]]], size=(2, 64, 64))
    flux[:, 20:44, 20:44] += 50.0  # a bright source in the middle does not inflate it
    np.testing.assert_allclose(projection.noise_sigma(flux), [0.5, 2.0], rtol=0.1)


def test_projection_chi2_is_the_flux_residual_over_the_noise(G):
    st = AsinhStretch(softening=(0.05,) * 3, lo=(-0.1,) * 3, hi=(5.0,) * 3)
    x = style.generate(G, np.random.default_rng(8).normal(size=(1, 16)))[0]
    noisy = st.inverse(x) + np.random.default_rng(9).normal(0, 0.02, size=x.shape)
    target = np.clip(st.forward(noisy), -1, 1)
    res = projection.project(G, target, steps=4, extractor=None, feature_weight=0, w_avg_samples=200,
                             init_candidates=4, stretch=st.to_dict(), chi2_weight=1e-3, sigma=[0.02] * 3)
    by_hand = float((((st.inverse(target) - st.inverse(res.reconstruction)) / 0.02) ** 2).mean())
    assert res.chi2 == pytest.approx(by_hand, rel=1e-3)
    assert len(res.losses) == 4 and np.isfinite([r["chi2"] for r in res.losses]).all()
    np.testing.assert_allclose(res.sigma, 0.02)
    plain = projection.project(G, target, steps=1, extractor=None, feature_weight=0, w_avg_samples=200,
                               init_candidates=0)  # a bare generator has no stretch: no chi^2
    assert plain.chi2 is None and np.isnan(plain.losses[0]["chi2"])
    with pytest.raises(ValueError, match="invertible stretch"):
        projection.project(G, target, steps=1, extractor=None, feature_weight=0, chi2_weight=1.0)


class _Model:
    """The few attributes of a checkpoint that the target functions read."""

    def __init__(self, *, channels, resolution, physical, stretch):
        self.channels, self.resolution, self.physical, self.stretch = channels, resolution, physical, stretch
        self.name, self.flux_unit, self.pixel_scale_arcsec = "m", None, None


def test_uploaded_png_becomes_a_target_and_a_wrong_kind_is_refused(tmp_path):
    from PIL import Image

    rgb = np.zeros((48, 48, 3), np.uint8)
    rgb[16:32, 16:32] = (255, 128, 0)
    Image.fromarray(rgb).save(tmp_path / "gal.png")
    model8 = _Model(channels=["R", "G", "B"], resolution=32, physical=False, stretch=None)
    found = projection.target_from_file(tmp_path, model=model8)
    target = found.image
    assert found.names == ("gal.png",) and found.label == "gal.png"
    assert target.shape == (3, 32, 32) and target.dtype == np.float32 and found.clipped == 0.0
    assert target[0, 16, 16] == pytest.approx(1.0, abs=0.02) and target[2, 16, 16] == pytest.approx(-1.0, abs=0.02)
    assert target[:, 0, 0] == pytest.approx([-1.0] * 3)
    flux_model = _Model(channels=["R", "G", "B"], resolution=32, physical=True, stretch=None)
    with pytest.raises(DataError, match="FITS stamp in flux units"):
        projection.target_from_file(tmp_path, model=flux_model)
    with pytest.raises(DataError, match="1-band"):
        projection.target_from_file(tmp_path, model=_Model(channels=["r"], resolution=32, physical=False, stretch=None))
